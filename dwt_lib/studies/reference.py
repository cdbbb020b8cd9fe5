"""Reference levels for an MLM loss: what a model that has learnt nothing, or only token frequencies, scores.

A held-out MLM loss of 6.6 nats means little alone. Two levels give it a scale:

- ``ln V``: a uniform guess over the vocabulary (a model that has learnt nothing);
- the unigram cross-entropy: every masked token predicted from corpus token frequencies, ignoring the context
  (a model that has learnt which tokens are common, and nothing else).

A model below the unigram line uses the context; one between the two lines has learnt frequencies only.
The figures (:mod:`dwt_lib.notebook.plots`) draw both where a result file carries ``reference``.
"""
from __future__ import annotations

import math

import numpy as np

from dwt_lib.config.schema import Config
from dwt_lib.data.prepare import prepare_pretraining_data


def unigram_reference(train: np.ndarray, validation: np.ndarray, vocab_size: int, special: list[int]) -> dict:
    """``ln V`` and the add-one unigram cross-entropy (nats) of ``validation`` under ``train``'s frequencies.

    Counts are over the non-special tokens (the ones masking can select; :mod:`dwt_lib.data.masking`) of the
    train blocks; every one of the ``vocab_size`` ids gets one extra count (add-one smoothing), so a token
    unseen in training has a finite cost. The cross-entropy is the mean of ``-ln p(token)`` over the
    validation blocks' non-special tokens: the loss of predicting each masked token from frequencies alone."""
    special = np.asarray(sorted(set(special)), dtype=np.int64)
    tr = np.asarray(train, dtype=np.int64).ravel()
    va = np.asarray(validation, dtype=np.int64).ravel()
    tr, va = tr[~np.isin(tr, special)], va[~np.isin(va, special)]
    if va.size == 0:
        raise ValueError("no non-special validation tokens to evaluate the unigram cross-entropy on")
    counts = np.bincount(tr, minlength=vocab_size).astype(np.float64) + 1.0       # add-one
    log_p = np.log(counts) - np.log(counts.sum())
    return {"ln_vocab": math.log(vocab_size), "unigram_ce": float(-log_p[va].mean()), "vocab_size": int(vocab_size),
            "train_tokens": int(tr.size), "validation_tokens": int(va.size)}


def mlm_reference(cfg: Config) -> dict:
    """:func:`unigram_reference` on the profile's prepared pre-training data (built, or read from the cache):
    ``{"ln_vocab", "unigram_ce", "vocab_size", "how", ...}``, losses in nats."""
    data = prepare_pretraining_data(cfg)
    tok = data.tokenizer
    V = len(tok)                      # the model's output size (notebook 03: build_model(..., len(tokenizer)))
    out = unigram_reference(data.train.array, data.validation.array, V, list(tok.all_special_ids))
    out["how"] = (f"ln V: uniform guess over the {V} token ids; unigram: each masked token predicted from the "
                  f"training blocks' token frequencies (add-one, {out['train_tokens']} tokens), cross-entropy on "
                  f"the {out['validation_tokens']} validation tokens; special tokens left out of both")
    return out
