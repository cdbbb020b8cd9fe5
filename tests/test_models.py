"""Named sizes: the paper's parameter ratios, CPU sizes, errors."""
import pytest
import torch

from dwt_lib.models import SIZES, bert_config, build_model, count_parameters

PAPER_RATIOS = {"paper-teacher-4l": 0.78, "paper-teacher-2l": 0.57, "paper-teacher-1l": 0.46}


@pytest.fixture(scope="module")
def paper_counts():
    # On the meta device: shapes only, no memory and no random init, so this takes milliseconds.
    with torch.device("meta"):
        return {name: count_parameters(build_model(name)) for name in ["paper-student", *PAPER_RATIOS]}


def test_paper_student_is_67m(paper_counts):
    assert 66e6 <= paper_counts["paper-student"] <= 68e6


@pytest.mark.parametrize("teacher, ratio", PAPER_RATIOS.items())
def test_paper_teacher_ratios(paper_counts, teacher, ratio):
    assert paper_counts[teacher] / paper_counts["paper-student"] == pytest.approx(ratio, abs=0.02)


@pytest.mark.parametrize("prefix", ["mini", "tiny"])
def test_cpu_sizes_keep_layer_counts(prefix):
    for suffix, layers in [("student", 6), ("teacher-4l", 4), ("teacher-2l", 2), ("teacher-1l", 1)]:
        assert bert_config(f"{prefix}-{suffix}", 500).num_hidden_layers == layers
        paper = bert_config(f"paper-{suffix}")
        assert paper.num_hidden_layers == layers


def test_tiny_model_builds_and_ties_decoder():
    m = build_model("tiny-student", 300)
    assert m.config.vocab_size == 300
    assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight
    n_all = sum(p.numel() for p in m.parameters())        # parameters() deduplicates too
    assert count_parameters(m) == n_all


def test_unknown_size_and_vocab_errors():
    with pytest.raises(KeyError, match="unknown model size 'huge'"):
        bert_config("huge", 100)
    with pytest.raises(ValueError, match="needs a vocab_size"):
        bert_config("tiny-student")
    with pytest.raises(ValueError, match="defined for vocab 30522"):
        bert_config("paper-student", 2000)
    assert "paper-student" in SIZES
