"""The paper's premise, checked from a teacher-quality result file.

The paper (Sec. 2) distils from a teacher whose quality "is inferior to the quality of the pre-trained
student ... obtained through stand-alone training". In held-out MLM loss (lower is better) that reads
student < weak < very weak < extremely weak. A gap is counted only when it is at least
:data:`MIN_GAP_NATS` and more than :data:`SPREAD_FACTOR` x the standalone student's spread over
pre-training seeds (sample std of its final loss): a smaller gap could be one seed's luck. The
student's masked-token accuracy is reported against :data:`ACCURACY_AIM` (the unigram plateau, where
a model predicts the most frequent tokens, sits near 5-13% here).
"""
from __future__ import annotations

MIN_GAP_NATS = 0.05
SPREAD_FACTOR = 2.0
ACCURACY_AIM = 0.20


def premise(res: dict) -> dict:
    """The premise's gates from ``res`` (``results/teacher_quality.json``): ``order`` (arm names, the
    student first, then teachers from largest to smallest), ``loss``, ``gaps`` (each adjacent pair:
    ``lower``, ``higher``, ``gap`` = higher's loss - lower's, ``ok``), ``student_spread`` (nan with one
    seed), ``student_seeds``, ``ordered``, ``gaps_ok``, ``holds``, ``accuracy``, ``accuracy_ok``."""
    runs = res["runs"]
    roles = sorted(res["roles"], key=lambda r: -res["size_ratio"][r])
    order = ["student"] + [f"teacher-{r}" for r in roles]
    loss = {n: runs[n]["mlm_loss"] for n in order}
    sd = runs["student"].get("mlm_loss_spread", float("nan"))
    sd = float("nan") if sd is None else sd
    need = max(MIN_GAP_NATS, SPREAD_FACTOR * sd) if sd == sd else float("nan")
    gaps = []
    for lo, hi in zip(order, order[1:]):
        g = loss[hi] - loss[lo]
        gaps.append({"lower": lo, "higher": hi, "gap": g, "ok": bool(need == need and g >= need and g > SPREAD_FACTOR * sd)})
    acc = runs["student"]["mlm_accuracy"]
    ordered = all(g["gap"] > 0 for g in gaps)
    gaps_ok = all(g["ok"] for g in gaps)
    return {"order": order, "loss": loss, "gaps": gaps, "student_spread": sd, "required_gap": need,
            "student_seeds": runs["student"].get("pretrain_seeds", [None]), "ordered": ordered,
            "gaps_ok": gaps_ok, "holds": ordered and gaps_ok, "accuracy": acc, "accuracy_ok": acc >= ACCURACY_AIM}


def _label(name: str) -> str:
    return "standalone student" if name == "student" else name[8:].replace("_", " ") + " teacher"


def premise_check(res: dict) -> str:
    """Plain words, from the numbers: does the paper's premise hold in this run, and if not, where not."""
    p = premise(res)
    n_seeds = len(p["student_seeds"])
    sd = p["student_spread"]
    spread = (f"± {sd:.3f} over {n_seeds} pre-training seeds" if sd == sd else "one pre-training seed, so no spread")
    text = ("The paper's premise is that every teacher is worse than the standalone student: held-out MLM loss "
            + " < ".join(_label(n) for n in p["order"]) + f", each gap at least {MIN_GAP_NATS:g} nats and more "
            f"than {SPREAD_FACTOR:g}x the student's pre-training seed spread. Here (final held-out MLM loss): "
            + ", ".join(f"{_label(n)} {p['loss'][n]:.3f}" + (f" ({spread})" if n == "student" else "")
                        for n in p["order"]) + ". ")
    bad = []
    for g in p["gaps"]:
        if g["gap"] <= 0:
            bad.append(f"the {_label(g['higher'])} is better than the {_label(g['lower'])} by {-g['gap']:.3f}")
        elif not g["ok"]:
            bad.append(f"the {_label(g['higher'])} is worse than the {_label(g['lower'])} by only {g['gap']:.3f}")
    if p["holds"]:
        gaps = ", ".join(f"{g['gap']:.3f}" for g in p["gaps"])
        text += f"The premise holds: every gap is at least {p['required_gap']:.3f} nats ({gaps})."
    else:
        text += "The premise does not hold: " + "; ".join(bad) if bad else "The premise does not hold"
        if sd != sd:
            text += ("; " if bad else ": ") + "with one pre-training seed the gaps cannot be told from seed noise"
        text += "."
    text += (f" The student's masked-token accuracy is {p['accuracy']:.1%} "
             f"({'at or above' if p['accuracy_ok'] else 'below'} the {ACCURACY_AIM:.0%} aim).")
    return text
