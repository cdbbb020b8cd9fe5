"""GLUE loading from the shipped sample (and, when present, the offline mirror), and each metric
against scikit-learn / SciPy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from dwt_lib.data import glue
from dwt_lib.config.load import load_params
from dwt_lib.core.errors import DataSourceError
from dwt_lib.data.tokens import load_tokenizer
from dwt_lib.data.sources import resolve

SOURCE = "sample:nyu-mll/glue"          # the smoke profile's source: no mirror, no network
MIRROR = "nyu-mll/glue"
needs_mirror = pytest.mark.skipif(not Path(resolve(MIRROR)).is_dir(),
                                  reason="the offline GLUE mirror is not in DWT_DATA_DIR (its full split sizes)")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("sample:google-bert/bert-base-uncased")


# Rows in the sample (tools/make_sample_data.py) and in the mirror's Parquet files
# (MRPC train: 3,667 in the mirror, one fewer than the Hub).
SAMPLE_COUNTS = {"sst2": (2000, 872), "mrpc": (500, 408), "cola": (500, 1043), "stsb": (500, 500),
                 "rte": (200, 277)}
MIRROR_COUNTS = {"sst2": (67349, 872), "mrpc": (3667, 408), "cola": (8551, 1043), "stsb": (5749, 1500),
                 "rte": (2490, 277), "wnli": (635, 71)}


@pytest.mark.parametrize("task", sorted(SAMPLE_COUNTS))
def test_split_sizes(task):
    assert glue.split_size(task, "train", SOURCE) == SAMPLE_COUNTS[task][0]
    assert glue.split_size(task, "validation", SOURCE) == SAMPLE_COUNTS[task][1]
    assert glue.split_size(task, "train", SOURCE) == len(glue.read_split(task, "train", SOURCE))


@needs_mirror
@pytest.mark.parametrize("task", sorted(MIRROR_COUNTS))
def test_mirror_split_sizes(task):
    assert glue.split_size(task, "train", MIRROR) == MIRROR_COUNTS[task][0]
    assert glue.split_size(task, "validation", MIRROR) == MIRROR_COUNTS[task][1]
    assert glue.split_size("qnli", "validation", MIRROR) == 5463


def test_available_tasks_and_table():
    assert glue.available_tasks(SOURCE) == ["sst2", "cola", "stsb", "mrpc", "rte"]
    table = glue.glue_table(load_params("smoke"))
    assert list(table.task) == list(glue.TASKS)
    row = table.set_index("task")
    assert row.loc["mnli", "train"] == "unavailable" and row.loc["qnli", "train"] == "unavailable"
    assert row.loc["sst2", "train"] == 2000 and bool(row.loc["sst2", "in_profile"])
    assert not bool(row.loc["cola", "in_profile"]) and bool(row.loc["cola", "available"])


@pytest.mark.parametrize("task,split", [("mnli", "train"), ("mnli", "validation"), ("qqp", "train"),
                                        ("qnli", "train")])
def test_unavailable_split_names_task_split_and_source(task, split):
    with pytest.raises(DataSourceError) as e:
        glue.read_split(task, split, SOURCE)
    msg = str(e.value)
    assert task in msg and SOURCE in msg and glue.split_name(task, split) in msg
    assert "finetune.source: nyu-mll/glue" in msg            # says what to do


@needs_mirror
def test_unavailable_split_in_the_mirror_says_how_to_reach_the_hub():
    with pytest.raises(DataSourceError) as e:
        glue.read_split("qqp", "train", MIRROR)
    msg = str(e.value)
    assert "qqp" in msg and MIRROR in msg and "DWT_DATA_DIR" in msg and "HF_HUB_OFFLINE" in msg


def test_label_ids_match_hub_convention():
    sst = glue.read_split("sst2", "validation", SOURCE)
    assert sorted(sst.label.unique()) == [0, 1] and int((sst.label == 1).sum()) == 444
    mrpc = glue.read_split("mrpc", "validation", SOURCE)
    assert sorted(mrpc.label.unique()) == [0, 1] and int((mrpc.label == 1).sum()) == 279
    cola = glue.read_split("cola", "validation", SOURCE)
    assert int((cola.label == 1).sum()) == 721
    stsb = glue.read_split("stsb", "validation", SOURCE)
    assert stsb.label.min() >= 0.0 and stsb.label.max() <= 5.0
    assert (glue.read_split("rte", "test", SOURCE).label == -1).all()


def test_load_glue_tokenizes_without_padding(tokenizer):
    ds = glue.load_glue("mrpc", tokenizer, max_seq_length=32, split="validation", source=SOURCE,
                        max_examples=50)
    assert len(ds) == 50 and ds.split == "validation"
    lengths = [len(x) for x in ds.encodings["input_ids"]]
    assert max(lengths) <= 32 and len(set(lengths)) > 1          # truncated, not padded
    item = ds[0]
    assert item["input_ids"][0] == tokenizer.cls_token_id and 1 in item["token_type_ids"]  # a pair
    assert set(ds.labels) <= {0, 1}
    st = glue.load_glue("stsb", tokenizer, 64, "train", SOURCE, max_examples=10)
    assert all(isinstance(y, float) for y in st.labels)
    single = glue.load_glue("sst2", tokenizer, 64, "validation", SOURCE, max_examples=5)
    assert all(set(x) == {0} for x in single.encodings["token_type_ids"])


def test_collate_pads_to_longest_in_batch(tokenizer):
    ds = glue.load_glue("sst2", tokenizer, 128, "validation", SOURCE, max_examples=8)
    batch = glue.collate([ds[i] for i in range(8)], tokenizer.pad_token_id)
    longest = max(len(ds[i]["input_ids"]) for i in range(8))
    assert batch["input_ids"].shape == (8, longest) and longest < 128
    assert batch["attention_mask"].sum().item() == sum(len(ds[i]["input_ids"]) for i in range(8))
    assert batch["labels"].dtype.is_floating_point is False


# ----------------------------------------------------------------------------- metrics

rng = np.random.default_rng(0)
Y = rng.integers(0, 2, 200)
P = np.where(rng.random(200) < 0.75, Y, 1 - Y)
YR = rng.uniform(0, 5, 200)
PR = YR + rng.normal(0, 1.5, 200)


def test_accuracy_tasks():
    for task in ("sst2", "qnli", "rte", "wnli", "mnli"):
        m = glue.compute_metrics(task, P, Y)
        assert m["score"] == pytest.approx(100 * accuracy_score(Y, P))


def test_mnli_three_classes_and_logits():
    y = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3))
    m = glue.compute_metrics("mnli", logits, y)
    assert m["accuracy"] == pytest.approx(100 * accuracy_score(y, logits.argmax(-1)))


def test_cola_matthews():
    m = glue.compute_metrics("cola", P, Y)
    assert m["score"] == pytest.approx(100 * matthews_corrcoef(Y, P))
    assert m["matthews_correlation"] == m["score"]
    assert glue.compute_metrics("cola", np.ones_like(Y), Y)["score"] == 0.0


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_accuracy_mean(task):
    m = glue.compute_metrics(task, P, Y)
    f1, acc = 100 * f1_score(Y, P), 100 * accuracy_score(Y, P)
    assert m["f1"] == pytest.approx(f1) and m["accuracy"] == pytest.approx(acc)
    assert m["score"] == pytest.approx((f1 + acc) / 2)


def test_stsb_pearson_spearman_mean():
    m = glue.compute_metrics("stsb", PR, YR)
    p, s = 100 * pearsonr(PR, YR)[0], 100 * spearmanr(PR, YR)[0]
    assert m["pearson"] == pytest.approx(p) and m["spearmanr"] == pytest.approx(s)
    assert m["score"] == pytest.approx((p + s) / 2)
    assert glue.compute_metrics("stsb", np.full(200, 2.5), YR)["score"] == 0.0   # constant: undefined -> 0


def test_metric_input_checks():
    with pytest.raises(ValueError, match="predictions"):
        glue.compute_metrics("sst2", P[:10], Y)
    with pytest.raises(KeyError, match="known"):
        glue.compute_metrics("squad", P, Y)


def test_glue_average():
    assert glue.glue_average({"sst2": 90.0, "cola": 40.0, "mrpc": 80.0}) == pytest.approx(70.0)
    assert glue.glue_average({"sst2": {"score": 80.0}, "stsb": {"score": 60.0}}) == pytest.approx(70.0)
    with pytest.raises(ValueError):
        glue.glue_average({})


def test_task_metadata():
    assert glue.TASKS["mnli"].validation_split == "validation_matched"
    assert glue.split_name("mnli", "validation") == "validation_matched"
    assert glue.TASKS["stsb"].is_regression and glue.TASKS["stsb"].num_labels == 1
    assert glue.TASKS["mnli"].num_labels == 3
    assert set(glue.TASKS) == {"mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte", "wnli"}
