"""MLM reference levels (dwt_lib.studies.reference): ln V and the add-one unigram cross-entropy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dwt_lib.config.load import load_params
from dwt_lib.studies import reference

# as tests/test_data.py: a small slice of the shipped sample, no mirror, no network
SMALL = {"data.max_documents": 4, "data.max_sentences": 200, "data.vocab_size": 400,
         "data.max_seq_length": 32, "data.validation_fraction": 0.25}


def test_unigram_reference_by_hand():
    # V = 6; specials 0 (pad), 1 (cls); train non-special tokens: 2, 2, 3 -> counts + 1 over all six ids:
    # id 0..5 -> 1, 1, 3, 2, 1, 1 (total 9). Validation tokens 2, 4 -> -(ln 3/9 + ln 1/9) / 2.
    train = np.array([[1, 2, 2, 3, 0, 0]])
    val = np.array([[1, 2, 4, 0]])
    r = reference.unigram_reference(train, val, 6, [0, 1])
    assert r["ln_vocab"] == pytest.approx(math.log(6))
    assert r["unigram_ce"] == pytest.approx(-(math.log(3 / 9) + math.log(1 / 9)) / 2)
    assert (r["train_tokens"], r["validation_tokens"]) == (3, 2)


def test_mlm_reference_on_the_smoke_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))
    r = reference.mlm_reference(load_params("smoke", SMALL))
    assert r["vocab_size"] >= 100 and r["ln_vocab"] == pytest.approx(math.log(r["vocab_size"]))
    # frequencies carry information: the unigram guess beats the uniform one, and costs more than nothing
    assert 1.0 < r["unigram_ce"] < r["ln_vocab"]
    assert "add-one" in r["how"]
