"""``model.arch``: bert and modernbert through the same library paths (the sparse MLM head and Eq. 3, evaluation,
saving in the stock format, remapping, growth, GLUE fine-tuning, parameter counts and FLOPs), at smoke scale on
bytes; and the config's checks. Run ids of the existing profiles: tests/test_golden_ids.py."""
import json
import math
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from dwt_lib.models import growth
from dwt_lib.core.errors import ConfigError
from dwt_lib.config.load import load_params
from dwt_lib.data.tokens import load_tokenizer
from dwt_lib.data.masking import mask_tokens
from dwt_lib.models.losses import hard_loss, soft_loss
from dwt_lib.models.encoder import (SparseMLM, arch_of, build_model, count_parameters, train_flops_per_sequence, use_device_attention)
from dwt_lib.train.pretrain import dwt_losses
from dwt_lib.train.init import save_model
from dwt_lib.models.remap import RANDOM, _tensors, remap_parameters
from dwt_lib.studies.identity import ensure_finetuned, ensure_pretrained, named_run

ARCHS = ["bert", "modernbert"]
SHAPE = lambda layers: dict(num_hidden_layers=layers, hidden_size=32, num_attention_heads=2, intermediate_size=48)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64)
# smoke on bytes, 6 steps of 4 blocks, the 1-layer size as the weak teacher (as tests/test_pretrain.py)
BASE = {"data.tokenizer": "bytes", "pretrain.max_steps": 6, "pretrain.batch_size_per_device": 4,
        "pretrain.eval_batches": 1, "pretrain.log_every": 1, "pretrain.eval_every": 3, "pretrain.checkpoint_every": 3,
        "pretrain.snapshot_fractions": [1.0], "model.teachers.weak": "tiny-teacher-1l",
        "finetune.max_seq_length_per_task": {"sst2": 96}}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("bytes")


def _pair(arch, t_layers=2, s_layers=4):
    torch.manual_seed(0)
    return (build_model(SHAPE(t_layers), 261, arch, **NO_DROPOUT).eval(),
            build_model(SHAPE(s_layers), 261, arch, **NO_DROPOUT).eval())


def _batch(tok, n=4, length=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 261, (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[0, -6:] = 0                                               # one padded row
    return mask_tokens(ids, tok, 0.3, g)


# ----------------------------------------------------------------------------- units, both archs

@pytest.mark.parametrize("arch", ARCHS)
def test_model_class_and_config(arch):
    m = build_model(SHAPE(3), 261, arch, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.2,
                    initializer_range=0.05, special_ids={"pad": 0, "cls": 2, "sep": 3}, max_position_embeddings=128)
    assert type(m).__name__ == {"bert": "BertForMaskedLM", "modernbert": "ModernBertForMaskedLM"}[arch]
    c = m.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size) == (3, 32, 2, 48, 261)
    assert c.initializer_range == 0.05
    if arch == "modernbert":
        assert c.layer_types == ["full_attention"] * 3                # global attention in every layer
        assert (c.embedding_dropout, c.mlp_dropout, c.attention_dropout) == (0.1, 0.1, 0.2)
        assert (c.pad_token_id, c.cls_token_id, c.sep_token_id, c.max_position_embeddings) == (0, 2, 3, 128)
        assert m.model.embeddings.tok_embeddings.padding_idx == 0
        assert c.hidden_activation == "gelu" and m.model.layers[1].mlp.Wi.out_features == 2 * 48     # GeGLU
    assert m.get_output_embeddings().weight is m.get_input_embeddings().weight                     # tied decoder


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_and_flops(arch):
    H, I, L, V = 32, 48, 3, 261
    m = build_model(SHAPE(L), V, arch)
    if arch == "bert":     # word + 512 positions + 2 types + LN; per layer QKV+O, LN, FFN, LN; head transform + LN + bias
        want = V * H + 512 * H + 2 * H + 2 * H + L * (4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H) \
            + (H * H + H) + 2 * H + V
    else:                  # word + LN (no biases anywhere but the decoder's); layer 0 has no attn_norm
        want = V * H + H + L * (3 * H * H + H * H + H + 2 * H * I + I * H) + (L - 1) * H + H + (H * H + H) + V
    assert count_parameters(m) == want
    ffn = {"bert": 2, "modernbert": 3}[arch]
    f = train_flops_per_sequence(m.config, 128, 19.2)
    assert f == pytest.approx(3 * (2 * (4 * H * H + ffn * H * I) * L * 128 + 4 * 128 * 128 * H * L
                                   + 2 * (H * H + H * V) * 19.2))


@pytest.mark.parametrize("arch", ARCHS)
def test_dwt_step_sparse_head_and_kl(arch, tok):
    """Eq. 3 on the masked rows through SparseMLM equals the same terms from the full models' logits, and its
    gradient reaches every student weight the masked rows depend on."""
    teacher, student = _pair(arch)
    ids, labels = _batch(tok)
    attn = ids != tok.pad_token_id
    select = labels != -100
    y = labels[select]
    full_t = teacher(input_ids=ids, attention_mask=attn.long()).logits[select]
    full_s = student(input_ids=ids, attention_mask=attn.long()).logits[select]
    use_device_attention(teacher, "cpu")
    use_device_attention(student, "cpu")
    loss, h, s = dwt_losses(SparseMLM(student), SparseMLM(teacher), ids, attn, select, y, alpha_soft=2.0,
                            temperature=2.0)
    assert float(h) == pytest.approx(float(hard_loss(full_s, y)), rel=1e-5)
    assert float(s) == pytest.approx(float(soft_loss(full_s, full_t, temperature=2.0)), rel=1e-4)
    assert float(s) > 0 and float(loss) == pytest.approx(float(h) + 2.0 * float(s), rel=1e-6)
    loss.backward()
    no_grad = [n for n, p in student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], no_grad


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_stock_format(arch, tok, tmp_path):
    _, model = _pair(arch)
    save_model(model, tok, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == arch
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    assert type(again) is type(model)
    ids, _ = _batch(tok)
    attn = (ids != 0).long()
    assert torch.equal(again(input_ids=ids, attention_mask=attn).logits, model(input_ids=ids, attention_mask=attn).logits)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "m")) == 261


@pytest.mark.parametrize("arch", ARCHS)
def test_remap_copies_layers_repeats_the_last_and_reports_every_key(arch):
    teacher, student = _pair(arch, 2, 4)
    names = list(_tensors(student))
    rep = remap_parameters(teacher, student)
    assert list(rep.sources) == names                              # every student key, in order
    layer = {"bert": "bert.encoder.layer.{}.", "modernbert": "model.layers.{}."}[arch]
    t, s = _tensors(teacher), _tensors(student)
    for i, src in ((0, 0), (1, 1), (2, 1), (3, 1)):               # teacher layers, the last repeated
        mine = [k for k in names if k.startswith(layer.format(i))]
        assert mine and all(rep.sources[k] == k.replace(layer.format(i), layer.format(src)) for k in mine)
        assert all(torch.equal(s[k], t[rep.sources[k]]) for k in mine)
    head = {"bert": ["cls.predictions.transform.dense.weight", "bert.embeddings.word_embeddings.weight"],
            "modernbert": ["head.dense.weight", "model.final_norm.weight", "model.embeddings.tok_embeddings.weight",
                           "model.embeddings.norm.weight"]}[arch]
    assert all(rep.sources[k] == k and torch.equal(s[k], t[k]) for k in head)
    assert rep.random == []
    if arch == "modernbert":       # a 1-layer teacher: layer 0 has no attn_norm, so the repeated layers keep theirs
        t1, s1 = _pair(arch, 1, 3)
        rep1 = remap_parameters(t1, s1)
        assert rep1.random == ["model.layers.1.attn_norm.weight", "model.layers.2.attn_norm.weight"]


@pytest.mark.parametrize("arch", ARCHS)
def test_growth_preserves_the_function_at_step_0(arch, tok):
    teacher, student = _pair(arch, 2, 5)
    gates, rep = growth.grow(teacher, student)
    ids, _ = _batch(tok)
    attn = (ids != 0).long()
    assert growth.function_gap(teacher, student, ids, attn) == 0.0
    assert rep["new_layers"] == ([1, 2, 3] if arch == "bert" else [2, 3, 4])
    if arch == "modernbert":      # pre-LN: zeroed output projections, no gate
        assert rep["gated_layers"] == [] and gates.layers == []
        assert rep["sources"]["model.layers.3.attn.Wo.weight"] == growth.NEW_ZERO
        assert float(student.model.layers[3].mlp.Wo.weight.abs().sum()) == 0.0
        assert float(student.model.layers[3].mlp.Wi.weight.abs().sum()) > 0
    else:                         # post-LN: gated at m = 0, a plain BERT layer at m = 1
        assert gates.layers == [1, 2, 3]
        gates.set(1.0)
    # the new layers are not dead: once they change, so does the function
    with torch.no_grad():
        for p in arch_of(student).layers(student)[rep["new_layers"][0]].parameters():
            p.add_(0.05 * torch.randn_like(p))   # (a constant shift would vanish in the next LayerNorm)
    assert growth.function_gap(teacher, student, ids, attn) > 1e-3


def test_bad_arch_is_one_config_error():
    with pytest.raises(ConfigError) as e:
        load_params("smoke", {"model.arch": "gpt2"})
    msg = str(e.value)
    assert "params/smoke.yaml" in msg and "model.arch" in msg and "bert, modernbert" in msg and "'gpt2'" in msg
    with pytest.raises(ConfigError, match="model.initializer_range"):
        load_params("smoke", {"model.initializer_range": -1.0})
    p = subprocess.run([sys.executable, "-m", "dwt_lib.cli", "plan", "--profile", "smoke", "--set", "model.arch=rnn"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("dwt: ") and len(p.stderr.strip().splitlines()) == 1


def test_arch_and_init_scale_enter_run_ids_only_when_set():
    bert = load_params("smoke")
    same = load_params("smoke", {"model.arch": "bert", "model.initializer_range": None})
    modern = load_params("smoke", {"model.arch": "modernbert"})
    scaled = load_params("smoke", {"model.initializer_range": 0.01})
    for name in ("teacher-weak", "student", "dwt-weak", "remap-weak"):
        ids = [named_run(c, name).id for c in (bert, same, modern, scaled)]
        assert ids[0] == ids[1] and len(set(ids[1:])) == 3
        assert named_run(modern, name).key["arch"] == "modernbert" and "arch" not in named_run(bert, name).key
    assert bert.short_hash() == same.short_hash() != modern.short_hash()


# ----------------------------------------------------------------------------- the registry, end to end

@pytest.fixture(scope="module", params=ARCHS)
def trained(request, tmp_path_factory):
    """dwt-weak (and its 1-layer teacher), remap-weak and beyond-grow trained for 6 steps on bytes."""
    out = tmp_path_factory.mktemp(f"outputs-{request.param}")
    mp = pytest.MonkeyPatch()
    mp.setenv("DWT_OUTPUTS_DIR", str(out))
    cfg = load_params("smoke", {**BASE, "model.arch": request.param})
    res = {n: ensure_pretrained(cfg, n, progress=False) for n in ("dwt-weak", "remap-weak", "beyond-grow")}
    yield request.param, cfg, res
    mp.undo()


def test_pretraining_runs_distil_evaluate_and_save(trained):
    arch, cfg, res = trained
    run = named_run(cfg, "dwt-weak")
    log = [json.loads(x) for x in (run.dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7)) and all(r["soft"] > 0 for r in log)
    ev = res["dwt-weak"]["final_eval"]
    assert ev["eval_tokens"] > 0 and 0 < ev["mlm_loss"] < 2 * math.log(261)
    assert [r["eval_mlm_loss"] for r in log if "eval_mlm_loss" in r][-1] == ev["mlm_loss"]
    for d in ("model", "snapshots/frac-1.00"):
        assert json.loads((run.dir / d / "config.json").read_text())["model_type"] == arch
        assert AutoModelForMaskedLM.from_pretrained(run.dir / d).config.vocab_size == 261
    assert res["dwt-weak"]["teacher_params"] < res["dwt-weak"]["params"]


def test_remap_run_reports_and_copies(trained):
    arch, cfg, _ = trained
    run = named_run(cfg, "remap-weak")
    rep = json.loads((run.dir / "remap_report.json").read_text())["sources"]
    layer = {"bert": "bert.encoder.layer.", "modernbert": "model.layers."}[arch]
    fives = {k: v for k, v in rep.items() if k.startswith(layer + "5.") and v != RANDOM}
    assert fives and all(v.startswith(layer + "0.") for v in fives.values())     # 1-layer teacher repeated to 6
    from safetensors.torch import load_file
    init = load_file(str(run.dir / "init" / "model.safetensors"))
    teacher = load_file(str(named_run(cfg, "teacher-weak").dir / "model" / "model.safetensors"))
    compared = [k for k, v in rep.items() if v != RANDOM and k in init and v in teacher]
    assert len(compared) > 10 and all(torch.equal(init[k], teacher[rep[k]]) for k in compared)


def test_grow_run_starts_as_the_teacher(trained):
    arch, cfg, _ = trained
    rep = json.loads((named_run(cfg, "beyond-grow").dir / "grow_report.json").read_text())
    assert rep["function_gap"] == 0.0 and rep["function_gap_blocks"] == 8
    assert rep["new_layers"] == ([0, 1, 2, 3, 4] if arch == "bert" else [1, 2, 3, 4, 5])


def test_glue_fine_tuning_from_the_saved_checkpoint(trained):
    arch, cfg, _ = trained
    r = ensure_finetuned(cfg, "dwt-weak", "sst2", 1)
    assert r["n_train"] == 64 and 0 <= r["score"] <= 100 and r["steps"] == 4
    assert r["metrics"]["score"] == r["score"]
