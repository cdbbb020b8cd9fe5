"""The sampling plan of data preparation (step 3 of :mod:`dwt_lib.data.pipeline`), as arrays of one number per
document: the global document order, which sentences are kept (1 in N over a *global* running sentence
index, then the first ``max_sentences``), the validation split from per-document draws, and the windows the
gather step reads in. Pure NumPy, so the rule is testable apart from the build.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np


def interleave_order(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Corpus and row of each position of the round-robin interleaving (row 0 of each corpus, then row 1, ...)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    rows = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]) if len(sizes) else np.zeros(0, np.int64)
    cors = np.repeat(np.arange(len(sizes)), sizes)
    o = np.lexsort((cors, rows))                      # by row (round), then corpus
    return cors[o], rows[o]


def sampling_plan(n_sentences: np.ndarray, every: int, max_sentences: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per document (global order): local index of its first kept sentence and how many it keeps.

    The same rule as :func:`dwt_lib.data.corpus.sample_sentences`: sentence ``g`` (global running index) is kept
    when ``g % every == 0``, then the first ``max_sentences`` kept ones overall.
    """
    n = np.asarray(n_sentences, dtype=np.int64)
    g = np.cumsum(n) - n                              # global index of each document's first sentence
    first = (-g) % every
    kept = np.where(n > first, (n - first + every - 1) // every, 0)
    if max_sentences is not None:
        before = np.cumsum(kept) - kept
        kept = np.clip(max_sentences - before, 0, kept)
    return first, kept


def validation_from_draws(u: np.ndarray, fraction: float) -> np.ndarray:
    """:func:`dwt_lib.data.corpus.validation_mask` from precomputed draws: ``u < fraction``, at least one."""
    mask = u < fraction
    if len(u) and not mask.any():
        mask[int(np.argmin(u))] = True
    return mask


def windows(weights: np.ndarray, cap: int) -> Iterator[tuple[int, int]]:
    """Split ``range(len(weights))`` into consecutive windows of total weight about ``cap`` (>= 1 item each)."""
    c = np.cumsum(weights)
    i = 0
    while i < len(weights):
        base = c[i - 1] if i else 0
        j = max(i + 1, int(np.searchsorted(c, base + cap, side="right")))
        yield i, min(j, len(weights))
        i = j
