"""Two spreads and one rule: when is a difference between two arms resolved?

An arm (``student``, ``dwt-weak``) has scores over pre-training seeds (``studies.pretrain_seeds``)
and, for each, over fine-tuning seeds (``finetune.seeds``). Each spread gives a standard error of
the difference of two arms' means:

- fine-tuning: over the per-fine-tuning-seed averages (each over the arm's pre-training seeds);
- pre-training: over the per-pre-training-seed averages (each over the fine-tuning seeds). When only
  one of the two arms has several pre-training seeds, its variance stands in for the other's (the
  arms are the same model trained two ways; said in the verdict). When neither has, it is unknown.

A difference is *resolved* only when it exceeds twice the larger of the two standard errors; with an
unknown one (a single pre-training seed on both sides) it is not resolved, whatever the fine-tuning
seeds say: the pre-training seed is the larger source of variance in this field.
"""
from __future__ import annotations

import math

import numpy as np


def seed_matrix(task_scores: list[dict]) -> tuple[list[int], np.ndarray]:
    """One arm's per-task score records (``_task_scores`` rows: ``scores``, ``pretrain_seeds``,
    ``finetune_seeds`` parallel lists) -> (pre-training seeds, matrix [pre-training x fine-tuning]
    of the task-averaged score)."""
    if not task_scores:
        return [], np.zeros((0, 0))
    pts = sorted(set(task_scores[0].get("pretrain_seeds") or [0]))
    fts = sorted(set(task_scores[0].get("finetune_seeds") or range(len(task_scores[0]["scores"]))))
    m = np.zeros((len(pts), len(fts)))
    for s in task_scores:
        cells = {}
        for i, v in enumerate(s["scores"]):
            p = (s.get("pretrain_seeds") or [0] * len(s["scores"]))[i]
            f = (s.get("finetune_seeds") or list(range(len(s["scores"]))))[i]
            cells[(p, f)] = v
        m += np.array([[cells[(p, f)] for f in fts] for p in pts])
    return pts, m / len(task_scores)


def se_mean_diff(a: list[float], b: list[float]) -> float:
    """Standard error of mean(a) - mean(b) (Welch); nan when either has fewer than two values."""
    if min(len(a), len(b)) < 2:
        return float("nan")
    return float(math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))


def se_pretrain_diff(a: list[float], b: list[float]) -> tuple[float, str]:
    """Standard error of the difference over pre-training seeds, and how it was obtained:
    ``"measured"`` (both arms have >= 2 seeds), ``"borrowed"`` (one has; its variance stands in for
    the other's) or ``"unknown"`` (neither: nan)."""
    if min(len(a), len(b)) >= 2:
        return se_mean_diff(a, b), "measured"
    many = a if len(a) >= 2 else b if len(b) >= 2 else None
    if many is None:
        return float("nan"), "unknown"
    var = float(np.var(many, ddof=1))
    return float(math.sqrt(var / len(a) + var / len(b))), "borrowed"


def seed_spread(values: list[float]) -> float:
    """Sample standard deviation over seeds (nan with one seed)."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")


def resolved(diff: float, se_finetune: float, se_pretrain: float) -> bool:
    """True when |diff| > 2 x the larger standard error; never with an unknown (nan) one."""
    if se_finetune != se_finetune or se_pretrain != se_pretrain:
        return False
    return abs(diff) > 2 * max(se_finetune, se_pretrain)


def verdict(diff: float, se_finetune: float, se_pretrain: float, how: str = "measured") -> str:
    """Words for :func:`resolved`: both standard errors, which one decides, and the outcome."""
    ft = "n/a (one fine-tuning seed)" if se_finetune != se_finetune else f"{se_finetune:.2f}"
    if se_pretrain != se_pretrain:
        return (f"SE over fine-tuning seeds {ft}; one pre-training seed per arm, so the larger spread is "
                f"unmeasured: not resolved")
    pt = f"{se_pretrain:.2f}" + (" (borrowed from the arm with several seeds)" if how == "borrowed" else "")
    if se_finetune != se_finetune:
        return f"SE over pre-training seeds {pt}; one fine-tuning seed: not resolved"
    big = max(se_finetune, se_pretrain)
    if big == 0:
        return f"SE {ft} (fine-tuning) and {pt} (pre-training): every seed scored the same, so no error bar"
    which = "pre-training" if se_pretrain >= se_finetune else "fine-tuning"
    return (f"SE {ft} over fine-tuning seeds, {pt} over pre-training seeds; {abs(diff) / big:.1f} x the larger "
            f"({which}): " + ("resolved" if resolved(diff, se_finetune, se_pretrain)
                              else "not resolved at 2 standard errors"))


def compare(a: tuple[list[float], list[float]], b: tuple[list[float], list[float]]) -> dict:
    """Difference of two arms given each as (per-fine-tuning-seed averages, per-pre-training-seed
    averages): ``diff``, both standard errors, ``how`` the pre-training one was got, ``resolved``,
    ``verdict``."""
    diff = float(np.mean(a[0]) - np.mean(b[0]))
    se_ft = se_mean_diff(a[0], b[0])
    se_pt, how = se_pretrain_diff(a[1], b[1])
    return {"diff": diff, "se_finetune": se_ft, "se_pretrain": se_pt, "se_pretrain_how": how,
            "resolved": resolved(diff, se_ft, se_pt), "verdict": verdict(diff, se_ft, se_pt, how)}


def larger_se(c: dict) -> float:
    """The standard error a :func:`compare` result is judged against: the larger of the two (the fine-tuning one
    where the pre-training one is unknown)."""
    return max(c["se_finetune"], c["se_pretrain"]) if c["se_pretrain"] == c["se_pretrain"] else c["se_finetune"]


def se_text(c: dict) -> str:
    """:func:`larger_se` for a table cell; ``n/a`` with one seed (no spread to measure)."""
    se = larger_se(c)
    return "n/a" if se != se else f"{se:.2f}"
