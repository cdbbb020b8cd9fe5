"""The paper's premise, checked from a teacher-quality result file.

The paper (Sec. 2) distils from a teacher whose quality "is inferior to the quality of the pre-trained
student ... obtained through stand-alone training". In held-out MLM loss (lower is better) that reads
student < weak < very weak < extremely weak. A gap is counted only when it is at least
:data:`MIN_GAP_NATS` and more than :data:`SPREAD_FACTOR` x the standalone student's spread over
pre-training seeds (sample std of its final loss): a smaller gap could be one seed's luck. The
student's masked-token accuracy is reported against :data:`ACCURACY_AIM` (the unigram plateau, where
a model predicts the most frequent tokens, sits near 5-13% here).

Where a gap is too small, :func:`gap_trend` extrapolates it: a straight line through the gap against
log(tokens) over the second half of the run, and the token count where that line reaches the required gap.
An extrapolation from one short run with a decaying learning rate, labelled as one wherever it is shown.
"""
from __future__ import annotations

import math
from dwt_lib.config.arms import split_seed
from dwt_lib.studies.text import md_table

MIN_GAP_NATS = 0.05
SPREAD_FACTOR = 2.0
ACCURACY_AIM = 0.20


#: Fraction of a run (by tokens) after which the gap's trend is fitted: the first half holds the warm-up
#: and the escape from the unigram plateau, where every model moves alike.
TREND_FROM = 0.5
#: Beyond this multiple of the run's tokens an extrapolated budget is reported as "beyond" it, not as a number.
TREND_MAX_FACTOR = 1000.0


def mean_curve(curves: dict, arm: str) -> list[tuple[float, float]]:
    """(tokens, held-out loss) of ``arm`` averaged over its pre-training seeds (``arm``, ``arm:s43``, ...)
    at the evaluation points they share."""
    runs = [c for n, c in curves.items() if split_seed(n)[0] == arm and c]
    if not runs:
        return []
    common = set.intersection(*({round(p["tokens"]) for p in c} for c in runs))
    by_t = {}
    for c in runs:
        for p in c:
            if round(p["tokens"]) in common:
                by_t.setdefault(round(p["tokens"]), []).append(p["mlm_loss"])
    return [(float(t), sum(v) / len(v)) for t, v in sorted(by_t.items())]


def gap_trend(curves: dict, lower: str, higher: str, need: float) -> dict:
    """How the gap ``higher`` - ``lower`` (held-out loss; positive = ``lower`` is better) moves with tokens.

    Fits ``gap = a + b ln(tokens)`` by least squares over the evaluation points after :data:`TREND_FROM`
    of the run (both curves at the same points; seeds averaged). Returns ``points`` (tokens, gap) of the
    whole run, ``fit`` (a, b) or None with fewer than 3 points, ``tokens_now`` (the run's last point),
    ``tokens_needed`` (where the line reaches ``need``: the run's own tokens if already there; None if the
    gap is not growing or ``need`` is unknown) and ``beyond`` (tokens_needed over
    :data:`TREND_MAX_FACTOR` x the run's tokens)."""
    lo, hi = dict(mean_curve(curves, lower)), dict(mean_curve(curves, higher))
    pts = [(t, hi[t] - lo[t]) for t in sorted(set(lo) & set(hi))]
    out = {"lower": lower, "higher": higher, "need": need, "points": pts, "fit": None, "tokens_now": None,
           "tokens_needed": None, "beyond": False}
    if not pts:
        return out
    t_end = pts[-1][0]
    out["tokens_now"] = t_end
    tail = [(t, g) for t, g in pts if t >= TREND_FROM * t_end]
    if len(tail) < 3:
        return out
    xs = [math.log(t) for t, _ in tail]
    ys = [g for _, g in tail]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
    a = my - b * mx
    out["fit"] = (a, b)
    if need != need:                          # nan: one pre-training seed, required gap unknown
        return out
    if a + b * math.log(t_end) >= need:
        out["tokens_needed"] = t_end
    elif b > 0:
        t_need = math.exp((need - a) / b) if (need - a) / b < 700 else math.inf
        out["tokens_needed"] = t_need
        out["beyond"] = t_need > TREND_MAX_FACTOR * t_end
    return out


def _budget_words(tr: dict) -> str:
    """The extrapolated trend of one gap, in a table cell."""
    if tr["fit"] is None:
        return "too few points to fit"
    per = f"{tr['fit'][1] * math.log(2):+.3f} nats per doubling of tokens"
    if tr["tokens_needed"] is None:
        return f"{per}: not growing"
    if tr["tokens_needed"] <= tr["tokens_now"]:
        return f"{per}: the line is at the required gap by now (the last point is below it)"
    if tr["beyond"]:
        return f"{per}: beyond {TREND_MAX_FACTOR:g}x this run's {tr['tokens_now'] / 1e6:.1f}M"
    return (f"{per}: ~{tr['tokens_needed'] / 1e6:,.0f}M tokens "
            f"({tr['tokens_needed'] / tr['tokens_now']:,.0f}x this run's {tr['tokens_now'] / 1e6:.1f}M)")


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
    curves = res.get("curves", {})
    for g in gaps:
        g["trend"] = gap_trend(curves, g["lower"], g["higher"], need)
    return {"order": order, "loss": loss, "gaps": gaps, "student_spread": sd, "required_gap": need,
            "student_seeds": runs["student"].get("pretrain_seeds", [None]), "ordered": ordered,
            "gaps_ok": gaps_ok, "holds": ordered and gaps_ok, "accuracy": acc, "accuracy_ok": acc >= ACCURACY_AIM}


def _label(name: str) -> str:
    return "standalone student" if name == "student" else name[8:].replace("_", " ") + " teacher"


def premise_check(res: dict) -> str:
    """The premise in a headline and a table, from the numbers: does it hold in this run, and if not, where not.
    Where a gap is short, its last column extrapolates it (a rough guide, labelled so)."""
    p = premise(res)
    sd = p["student_spread"]
    short = [g for g in p["gaps"] if not g["ok"]]
    need = (f"{p['required_gap']:.3f} nats (the larger of {MIN_GAP_NATS:g} and {SPREAD_FACTOR:g}x the student's seed "
            f"spread)" if sd == sd else f"{MIN_GAP_NATS:g} nats")
    if p["holds"]:
        head = f"**The premise holds**: every teacher is worse than the standalone student, each gap at least {need}."
    else:
        why = [f"{len(short)} of {len(p['gaps'])} gaps are short of {need}"]
        why += [] if p["ordered"] else ["the models are not ordered by size"]
        why += ["with one pre-training seed the gaps cannot be told from seed noise"] if sd != sd else []
        head = "**The premise does not hold**: " + "; ".join(why) + "."
    rows = [[_label("student"), f"{p['loss']['student']:.3f}"
             + (f" ± {sd:.3f} ({len(p['student_seeds'])} seeds)" if sd == sd else " (1 seed)"), ""]]
    for g in p["gaps"]:
        mark = "" if g["ok"] else (f" (better than the {_label(g['lower'])})" if g["gap"] <= 0 else " (short)")
        rows.append([_label(g["higher"]), f"{p['loss'][g['higher']]:.3f}", f"{g['gap']:+.3f}{mark}"])
    header = ["model", "held-out MLM loss", "gap to the row above"]
    if short:
        header.append("trend of a short gap (extrapolated)")
        rows = [r + [_budget_words(g["trend"]) if g and not g["ok"] else ""] for r, g in zip(rows, [None] + p["gaps"])]
    lines = md_table(header, rows)
    tail = (f"Student masked-token accuracy {p['accuracy']:.1%} ({'at or above' if p['accuracy_ok'] else 'below'} the "
            f"{ACCURACY_AIM:.0%} aim).")
    if short:
        tail += " The trend is a line against log tokens over each run's second half: a rough guide, not a measurement."
    return f"{head}\n\n{lines}\n\n{tail}"
