"""Parameter remapping (appendix A.3): what is copied, what is left, and the report."""
import pytest
import torch

from dwt_lib.models.encoder import build_model
from dwt_lib.models.remap import RANDOM, remap_parameters, source_key

VOCAB = 120


def _pair(teacher="tiny-teacher-4l", student="tiny-student", vocab=VOCAB):
    torch.manual_seed(0)
    return build_model(teacher, vocab), build_model(student, vocab)


def _tensors(model):
    """state_dict plus non-persistent buffers (position_ids, token_type_ids)."""
    out = dict(model.state_dict())
    out.update({n: b for n, b in model.named_buffers(remove_duplicate=False)})
    return out


def _all_names(model):
    return set(_tensors(model))


def test_copied_tensors_equal_their_source():
    teacher, student = _pair()
    report = remap_parameters(teacher, student)
    t_sd, s_sd = _tensors(teacher), _tensors(student)
    for name in report.copied:
        src = report.sources[name]
        assert torch.equal(s_sd[name], t_sd[src]), name
    assert report.random == []          # a BertForMaskedLM student has nothing the teacher lacks


def test_extra_layers_take_teacher_last_layer():
    teacher, student = _pair()
    report = remap_parameters(teacher, student)
    q = "bert.encoder.layer.{}.attention.self.query.weight"
    for i in range(4):
        assert report.sources[q.format(i)] == q.format(i)
    for i in (4, 5):
        assert report.sources[q.format(i)] == q.format(3)
        assert torch.equal(student.state_dict()[q.format(i)], teacher.state_dict()[q.format(3)])
    assert source_key("bert.encoder.layer.5.output.dense.bias", 1) == "bert.encoder.layer.0.output.dense.bias"
    assert source_key("cls.predictions.bias", 4) == "cls.predictions.bias"


def test_report_is_complete_and_renders():
    teacher, student = _pair("tiny-teacher-2l")
    report = remap_parameters(teacher, student)
    assert set(report.sources) == _all_names(student)
    assert sorted(report.copied + report.random) == sorted(report.sources)
    table = report.table()
    assert "bert.encoder.layer.5.output.dense.weight" in table and "layer.1.output.dense.weight" in table
    d = report.to_dict()
    assert d["sources"] == report.sources and d["n_random"] == 0
    assert list(report.to_frame().columns) == ["student", "source", "note"]


def test_tied_decoder_counted_once_and_still_tied():
    teacher, student = _pair()
    report = remap_parameters(teacher, student)
    dec, emb = "cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"
    assert report.tied[dec] == emb
    assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight
    assert torch.equal(student.state_dict()[dec], teacher.state_dict()[emb])
    n_unique = sum(p.numel() for p in student.parameters()) + sum(b.numel() for b in student.buffers())
    assert report.copied_numel == n_unique


def test_untouched_parameters_stay_untouched():
    """A student with a module the teacher lacks: it is reported random and left bit-identical."""
    teacher, student = _pair("tiny-teacher-1l")
    student.extra_head = torch.nn.Linear(4, 3)
    before = {k: v.clone() for k, v in _tensors(student).items()}
    report = remap_parameters(teacher, student)
    assert sorted(report.random) == ["extra_head.bias", "extra_head.weight"]
    after = _tensors(student)
    for name in report.random:
        assert torch.equal(after[name], before[name])
    assert report.random_numel == 15
    changed = [k for k in report.copied if not torch.equal(after[k], before[k])]
    assert "bert.encoder.layer.5.attention.self.query.weight" in changed


@pytest.mark.parametrize("student_kw, key", [
    (dict(hidden_size=32, num_attention_heads=2, intermediate_size=256), "hidden_size"),
    (dict(intermediate_size=128), "intermediate_size"),
    (dict(num_attention_heads=4), "num_attention_heads"),
    (dict(vocab_size=VOCAB + 1), "vocab_size"),
])
def test_mismatch_raises(student_kw, key):
    from transformers import BertForMaskedLM
    from dwt_lib.models.encoder import bert_config
    teacher = build_model("tiny-teacher-1l", VOCAB)
    cfg = bert_config("tiny-student", VOCAB)
    for k, v in student_kw.items():
        setattr(cfg, k, v)
    student = BertForMaskedLM(cfg)
    with pytest.raises(ValueError, match=f"teacher {key}=.* but student {key}="):
        remap_parameters(teacher, student)


def test_shape_mismatch_names_both_shapes():
    """Without configs (plain modules), a shape mismatch names both shapes."""
    teacher = torch.nn.Sequential(torch.nn.Linear(4, 3))
    student = torch.nn.Sequential(torch.nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"teacher shape \(3, 4\) vs student shape \(3, 5\)"):
        remap_parameters(teacher, student)
