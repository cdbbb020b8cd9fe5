"""Named sizes: the paper's parameter ratios, CPU sizes, errors."""
import pytest
import torch

from dwt_lib.config.sizes import SIZES
from dwt_lib.models.encoder import bert_config, build_model, count_parameters

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


def test_profile_size_from_spec_and_lookup_order():
    from dwt_lib.config.sizes import resolve_size, size_from_spec
    kw = size_from_spec({"layers": 6, "hidden": 128, "heads": 2})
    assert kw == {"num_hidden_layers": 6, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}
    assert size_from_spec({"layers": 1, "hidden": 96, "heads": 3, "intermediate": 200})["intermediate_size"] == 200
    # a profile's size shadows a preset of the same name; other names still reach the presets
    sizes = {"mini-student": {"layers": 6, "hidden": 128, "heads": 2}}
    assert resolve_size("mini-student", sizes)["hidden_size"] == 128
    assert resolve_size("mini-teacher-4l", sizes) == SIZES["mini-teacher-4l"]
    cfg = bert_config("mini-student", 500, sizes=sizes)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 128, 2)
    assert bert_config(kw, 500).to_dict() == cfg.to_dict()      # a run's resolved shape builds the same
    with pytest.raises(KeyError, match="profile sizes: mini-student; presets: "):
        resolve_size("wide", sizes)


@pytest.mark.parametrize("spec, key, what", [
    ({"layers": 6, "hidden": 100, "heads": 3}, "heads", "not divisible by 3 heads"),
    ({"layers": 6, "hidden": 128, "heads": 2, "width": 9}, "width", "unknown key"),
    ({"layers": 6, "heads": 2}, "hidden", "missing"),
    ({"layers": 0, "hidden": 128, "heads": 2}, "layers", "integer >= 1"),
    ({"layers": 6, "hidden": 128.0, "heads": 2}, "hidden", "integer >= 1"),
    ([6, 128, 2], "", "expected a mapping"),
])
def test_profile_size_errors_name_the_key(spec, key, what):
    from dwt_lib.core.errors import SizeError
    from dwt_lib.config.sizes import size_from_spec
    with pytest.raises(SizeError, match=what) as e:
        size_from_spec(spec)
    assert e.value.key == key
