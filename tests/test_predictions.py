"""Notebook 02's teacher row: a real prediction when the weak-teacher run is finished, random logits before."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dwt_lib.notebook import predictions
from dwt_lib.studies import identity as studies
from dwt_lib.config.load import load_params
from dwt_lib.data.sources import resolve
from dwt_lib.runs.registry import write_result

TOKENIZER = resolve("sample:google-bert/bert-base-uncased")     # shipped with the package


def test_random_logits_before_the_teacher_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    cfg = load_params("smoke")
    p = predictions.teacher_prediction(cfg)
    assert not p.real and p.kind == "random logits" and "no finished teacher-weak run" in p.describe()
    assert p.logits.shape == (cfg.data.vocab_size,) and bool((p.logits[:-1] >= p.logits[1:]).all())
    assert torch.equal(p.logits, predictions.teacher_prediction(cfg).logits)      # seeded: the same each time


@pytest.mark.skipif(not Path(TOKENIZER).is_dir(), reason="BERT tokenizer not found offline (set DWT_DATA_DIR)")
def test_real_prediction_from_a_finished_teacher(tmp_path, monkeypatch):
    """A finished teacher-weak run (a tiny random BERT saved where the registry puts it) and a held-out block:
    the row is the model's logits at the masked word, with the token strings."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    cfg = load_params("smoke")
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    run = studies.named_run(cfg, "teacher-weak")
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64))
    model.save_pretrained(run.dir / "model")
    tok.save_pretrained(run.dir / "model")
    write_result(run.result_path, cfg, {"run": {"id": run.id}, "final_eval": {}})
    ids = tok("the cat sat on the mat because it was warm and the dog was not there at all",
              padding="max_length", max_length=24)["input_ids"]
    monkeypatch.setattr("dwt_lib.data.prepare.prepare_pretraining_data",
                        lambda c: SimpleNamespace(validation=torch.tensor([ids])))
    p = predictions.teacher_prediction(cfg)
    assert p.real and p.kind == "a trained teacher's prediction" and run.id in p.source
    assert "[MASK]" in p.context and p.answer == tok.convert_ids_to_tokens(ids[len(ids) // 2])
    assert p.logits.shape == (len(tok),) and len(p.tokens) == len(tok)
    masked = torch.tensor([ids]).clone()
    masked[0, len(ids) // 2] = tok.mask_token_id
    with torch.no_grad():
        ref = model.eval()(input_ids=masked, attention_mask=(masked != tok.pad_token_id).long()).logits[0, len(ids) // 2]
    assert p.tokens[0] == tok.convert_ids_to_tokens(int(ref.argmax())) and torch.allclose(p.logits[0], ref.max())
    assert p.answer in p.describe() and p.tokens[0] in p.describe()
