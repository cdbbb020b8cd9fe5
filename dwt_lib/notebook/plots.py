"""Figures, drawn only from result files (``outputs/<profile>/results/*.json``).

Every function takes the path of a result file, draws, saves PNG and SVG under
``outputs/<profile>/figures/`` and returns the figure. No number is typed in here: the
paper's reported values come from the result file too, where they are labelled as the paper's.
"""
from __future__ import annotations

import textwrap

from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker

from dwt_lib.runs.registry import read_json, read_log
from dwt_lib.config.arms import NO_PRETRAINING, split_seed
from dwt_lib.studies.beyond import TITLES
from dwt_lib.studies.premise import premise, TREND_FROM
from dwt_lib.studies.results import baseline_tasks, over_training_comparisons, seed_design

COLORS = {"teacher": "#4C72B0", "student": "#C44E52", "dwt": "#55A868", "soft-normal": "#55A868",
          "soft-strong": "#DD8452", "soft-decay": "#8172B3", "remap": "#937860"}
STYLE = {"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
         "font.size": 10, "figure.dpi": 110, "savefig.bbox": "tight"}


@contextmanager
def style():
    """``plt.rc_context(STYLE)`` with pyplot's backend resolved before the context opens.

    In a fresh Jupyter kernel pyplot picks its backend lazily, at the first figure. If that happens inside an
    ``rc_context``, the inline backend switches interactive mode on inside the context and the context's exit
    switches it off again: from then on no pyplot figure displays by itself, neither the library's nor a reader's
    own ``plt.plot`` (the executed notebooks showed only their first figure). Resolving the backend first keeps
    the mode it sets. ``pyplot._get_backend_mod`` resolves it once and is a no-op afterwards (unlike
    ``switch_backend``, which would close the figures already open)."""
    plt._get_backend_mod()
    with plt.rc_context(STYLE):
        yield


def figures_dir(result_path: Path) -> Path:
    """``outputs/<profile>/figures`` next to the ``results`` folder of a result file."""
    return Path(result_path).parent.parent / "figures"


def save(fig, result_path: Path, name: str) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` and ``<name>.svg`` in the profile's figures folder."""
    d = figures_dir(result_path)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.png", d / f"{name}.svg"]
    for p in paths:
        fig.savefig(p)
    return paths


def _color(run: str) -> str:
    for k in (run, run.split("-")[0]):
        if k in COLORS:
            return COLORS[k]
    return "#333333"


#: 12 colours (colour-blind-safe first) and 12 markers: every run of a figure gets its own pair, so two runs
#: differ in both even in grey print.
PALETTE = ["#4C72B0", "#C44E52", "#55A868", "#DD8452", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD", "#1B9E77", "#7570B3"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def run_styles(runs) -> dict[str, dict]:
    """``{run: {"color", "marker"}}``, distinct in both for up to 12 runs: the study colour of a run
    (:data:`COLORS`) where no earlier run of the figure took it, else the next free palette colour."""
    out, used = {}, set()
    for i, run in enumerate(runs):
        c = _color(run)
        if c == "#333333" or c in used:
            c = next((p for p in PALETTE if p not in used), PALETTE[i % len(PALETTE)])
        used.add(c)
        out[run] = {"color": c, "marker": MARKERS[i % len(MARKERS)]}
    return out


def identical(curves: dict[str, list], ids: dict[str, str] | None = None) -> dict[str, str]:
    """Runs whose curve equals an earlier run's (or whose run id does): ``{later run: first run}``.
    The figures draw both and say so in the legend, rather than one line hiding the other."""
    return {n: m for n, (m, _) in near(curves, 0.0, ids).items()}


def near(curves: dict[str, list], atol: float, ids: dict[str, str] | None = None) -> dict[str, tuple[str, float]]:
    """Runs whose curve lies within ``atol`` of an earlier run's at every point (same x where the points are
    ``(x, y, ...)`` tuples), or whose run id equals it: ``{later run: (first run, largest difference)}``, the
    difference 0.0 for a curve equal to the other (up to float noise, 1e-9 relative) or the same run. At a
    panel's scale a curve within a marker of another hides it, so the legend says how close they are."""
    import numpy as np
    out = {}
    names = [n for n in curves if curves[n]]
    for i, n in enumerate(names):
        for m in names[:i]:
            if m in out:
                continue
            a, b = np.asarray(curves[n], dtype=float), np.asarray(curves[m], dtype=float)
            if ids is not None and ids.get(n) is not None and ids.get(n) == ids.get(m):
                gap = 0.0
            elif a.shape != b.shape or (a.ndim == 2 and not np.array_equal(a[:, 0], b[:, 0])):
                continue
            else:
                ya, yb = (a[:, 1:], b[:, 1:]) if a.ndim == 2 else (a, b)
                gap = 0.0 if np.allclose(ya, yb, rtol=1e-9, atol=1e-12) else float(np.max(np.abs(ya - yb)))
            if gap <= atol:
                out[n] = (m, gap)
                break
    return out


def overlap_labels(curves: dict[str, list], ids: dict[str, str] | None = None, frac: float = 0.03,
                   unit: str = "nats") -> dict[str, tuple[str, bool]]:
    """Each run's legend label and whether its line goes thinner on top: a curve :func:`identical` to an earlier
    one says so; one within ``frac`` of the panel's height of another (3%: about a marker) says how close."""
    span = [v for c in curves.values() for _, v in c]
    close = near(curves, frac * (max(span) - min(span)) if span else 0.0, ids)
    same = {n: m for n, (m, gap) in close.items() if gap == 0.0}
    return {n: (f"{n} (curve within {close[n][1]:.3f} {unit} of {close[n][0]}'s)" if n in close and n not in same
                else same_label(n, n, same), n in close) for n in curves}


def same_label(label: str, run: str, same: dict[str, str], what: str = "curve", names=None) -> str:
    """``label``, with "(curve identical to X's)" where :func:`identical` found one; X is the other run's
    legend name (``names``, default its run name)."""
    return f"{label} ({what} identical to {(names or {}).get(same[run], same[run])}'s)" if run in same else label


def legend_outside(ax, width: int = 36, **kw):
    """The axes' legend to its right, outside the data (constrained layout, or ``bbox_inches="tight"``
    on saving, makes room for it); labels wrapped at ``width`` characters, so one long label does not squeeze
    the panels."""
    kw = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0,
          "frameon": False, **kw}
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = kw.pop("handles", handles), kw.pop("labels", labels)
    return ax.legend(handles, [textwrap.fill(t, width) for t in labels], **kw)


def reference_lines(ax, res: dict | None) -> None:
    """ln V and the unigram cross-entropy (``res["reference"]``, :func:`dwt_lib.studies.reference.mlm_reference`)
    on an MLM-loss axis: drawn where they lie within one data span of the curves, else listed in the legend as
    above (or below) the axis, so that the curves keep their resolution."""
    ref = (res or {}).get("reference")
    if not ref:
        return
    lo, hi = ax.get_ylim()
    span = hi - lo
    for y, text, ls in ((ref["ln_vocab"], f"ln V = {ref['ln_vocab']:.2f}: uniform", "-."),
                        (ref["unigram_ce"], f"unigram {ref['unigram_ce']:.2f}: frequencies", "--")):
        if lo - span <= y <= hi + span:
            ax.axhline(y, color="#555555", lw=1, ls=ls, label=text, zorder=1)
        else:
            ax.plot([], [], color="#555555", lw=1, ls=ls, label=f"{text} ({'above' if y > hi else 'below'} axis)")


def majority_line(ax, baseline: float | None, values, label: str = "majority-class baseline") -> None:
    """The majority-class baseline as a dashed line where the scores approach it (within twice their
    span, at least 5 points); otherwise a legend entry with its value, so its distance is still stated."""
    if baseline is None or baseline != baseline:
        return
    vals = [v for v in values if v == v]
    near = not vals or min(vals) - baseline <= max(5.0, 2 * (max(vals) - min(vals)))
    kw = dict(color="#888888", ls=(0, (4, 2)), lw=1, zorder=1)
    if near:
        ax.axhline(baseline, label=f"{label} {baseline:.1f}", **kw)
    else:
        ax.plot([], [], label=f"{label} {baseline:.1f} (below the axis)", **kw)


def _glue_se(r: dict) -> float:
    """Standard error of an arm's GLUE average: the larger of the SE over fine-tuning seeds and over
    pre-training seeds (the one :func:`dwt_lib.studies.spread.resolved` decides with); 0 where unknown."""
    import numpy as np
    se = [float(np.std(v, ddof=1) / np.sqrt(len(v))) for v in (r.get("glue_avg_per_seed") or [],
                                                                r.get("glue_avg_per_pretrain_seed") or [])
          if len(v) >= 2]
    return max(se) if se else 0.0


def majority_glue(res: dict) -> float | None:
    """The GLUE average of the tasks' majority-class baselines (constant prediction; 0 for correlations),
    from the ``majority_baseline`` of the result file's score rows, over the same tasks as the scores' GLUE
    average (``average_tasks``: the paper's set, so RTE stays out where the paper leaves it out); None if the
    file lacks a baseline for one of them."""
    tasks = res.get("average_tasks") or res.get("tasks")
    by = {}
    for s in res.get("scores", []):
        if s.get("majority_baseline") is not None and s["majority_baseline"] == s["majority_baseline"] \
                and (tasks is None or s["task"] in tasks):
            by.setdefault(s["task"], []).append(s["majority_baseline"])
    if not by or set(by) != set(tasks or by):
        return None
    return sum(sum(v) / len(v) for v in by.values()) / len(by)


def teacher_quality(result_path: Path):
    """Fig. 2: GLUE average (bars: ±1 SE) against parameter count; an arrow from each teacher to its DWT student.
    The students share one x, so they are listed in a column to the right, each DWT student with its gain over
    the standalone student (and the paper's); the majority-class baseline where the scores approach it."""
    res = read_json(result_path)
    runs = res["runs"]
    kinds = {"teacher": ("o", "teachers (alone)"), "student": ("*", "student (alone)"),
             "dwt": ("s", "students with DWT")}
    xs = [r["params"] / 1e6 for r in runs.values()]
    span = max(xs) - min(xs) or 1.0
    studs = sorted((n for n in runs if not n.startswith("teacher-") and n != NO_PRETRAINING),
                   key=lambda n: -runs[n]["glue_avg"])
    # the students share one x: side by side (dodged), so that their error bars do not hide each other
    px = {n: r["params"] / 1e6 for n, r in runs.items()}
    px.update({n: px[n] + (i - (len(studs) - 1) / 2) * 0.035 * span for i, n in enumerate(studs)})
    with style():
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, r in runs.items():
            if name == NO_PRETRAINING:      # the control: fine-tuning with no pre-training, a level to read against
                ax.axhline(r["glue_avg"], ls=":", lw=1.2, color="0.45", label="no pre-training (random-init)")
                continue
            kind = name.split("-")[0]
            marker, label = kinds[kind]
            ax.errorbar(px[name], r["glue_avg"], yerr=_glue_se(r), fmt=marker, ms=13 if kind == "student"
                        else 8, color=_color(name), ecolor=_color(name), elinewidth=1, capsize=3, zorder=3,
                        label=label)
            if kind == "teacher":       # above-left: the arrow leaves to the right
                ax.annotate(name[8:], (r["params"] / 1e6, r["glue_avg"]), textcoords="offset points",
                            xytext=(-7, 7), ha="right", va="bottom", fontsize=8, color="#444444", zorder=4,
                            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.85))  # over arrows
        for role in res["roles"]:
            t, s = runs[f"teacher-{role}"], runs[f"dwt-{role}"]
            ax.annotate("", xy=(px[f"dwt-{role}"], s["glue_avg"]), xytext=(px[f"teacher-{role}"], t["glue_avg"]),
                        arrowprops=dict(arrowstyle="->", color="#888888", lw=1, shrinkA=7, shrinkB=7))
        # students share one x: a column to the right (name, score ± SE; for DWT its gain), joined by thin lines
        y = 0.98
        for n in studs:
            r = runs[n]
            ax.annotate(f"{n}: {r['glue_avg']:.2f} ± {_glue_se(r):.2f}", (px[n], r["glue_avg"]), fontsize=8,
                        color=_color(n), xytext=(1.03, y), textcoords="axes fraction", va="top",
                        arrowprops=dict(arrowstyle="-", color=_color(n), lw=0.5, alpha=0.5, shrinkB=6))
            y -= 0.065
            role = n[4:] if n.startswith("dwt-") else None
            if role in res["dwt_gain"]:
                g = res["dwt_gain"][role]
                cmp = res.get("dwt_gain_compare", {}).get(role)
                ok = bool(cmp and cmp["resolved"])
                big = max(cmp["se_finetune"], cmp["se_pretrain"]) if cmp else float("nan")
                noise = f" ({abs(g) / big:.1f} SE)" if not ok and big > 0 else (" (?)" if not ok else "")
                # grey: not resolved (the title counts the resolved ones)
                ax.annotate(f"{g:+.2f}{noise}, paper {res['paper']['dwt_gain'][role]:+.2f}", (1.06, y),
                            xycoords="axes fraction", va="top", fontsize=7.5,
                            color=("#2a7a3a" if g > 0 else "#a33") if ok else "#777777")
                y -= 0.065
        ax.axhline(runs["student"]["glue_avg"], color=COLORS["student"], lw=0.8, ls="--", alpha=0.6,
                   label="standalone student's score")
        majority_line(ax, majority_glue(res), [r["glue_avg"] for r in runs.values()],
                      label="majority-class baseline (GLUE avg)")
        ax.set_xlim(min(xs) - 0.3 * span, max(xs) + 0.08 * span)          # room for the teachers' names
        h, lab = ax.get_legend_handles_labels()
        uniq = dict(zip(lab, h))
        legend_outside(ax, handles=list(uniq.values()), labels=list(uniq.keys()), loc="lower left",
                       bbox_to_anchor=(1.03, 0.0), title="bars: ±1 SE", title_fontsize=7)
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(f"GLUE average ({', '.join(res.get('average_tasks') or res['tasks'])})")
        n_ok = sum(bool((res.get("dwt_gain_compare", {}).get(r) or {}).get("resolved")) for r in res["roles"])
        ax.set_title(f"Teacher quality ({res['provenance']['profile']} profile; {seed_design(res)}):\nDWT gain over "
                     f"the standalone student; {n_ok} of {len(res['roles'])} resolved (> 2 SE)", fontsize=10)
        save(fig, result_path, "03_teacher_quality")
    return fig


def premise_curves(result_path: Path):
    """The paper's premise (teachers worse than the standalone student): held-out MLM loss and masked-token
    accuracy against tokens seen for the standalone student (every pre-training seed) and each teacher,
    from the curves in ``results/teacher_quality.json``; the verdict of :func:`dwt_lib.studies.premise.premise`
    in the title."""
    res = read_json(result_path)
    p = premise(res)
    blues = ["#1f3b73", "#4C72B0", "#8fb0e0", "#c5d6f0"]
    colour = {n: blues[min(i, len(blues) - 1)] for i, n in enumerate(p["order"][1:])}
    colour["student"] = COLORS["student"]
    marker = {n: MARKERS[i % len(MARKERS)] for i, n in enumerate(p["order"])}
    n_seeds = {}
    for run in res.get("curves", {}):
        arm, _ = split_seed(run)
        n_seeds[arm] = n_seeds.get(arm, 0) + 1
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), layout="constrained")
        by_arm = {}
        for run, curve in res.get("curves", {}).items():
            arm, seed = split_seed(run)
            if not curve or arm not in colour:
                continue
            by_arm.setdefault(arm, []).append(curve)
            x = [c["tokens"] / 1e6 for c in curve]
            label = None if seed is not None else (arm[8:] if arm.startswith("teacher-") else arm)
            kw = dict(color=colour[arm], lw=2 if arm == "student" else 1.4, ls="--" if seed is not None else "-",
                      marker=marker.get(arm, "."), ms=4, label=label)
            axes[0].plot(x, [c["mlm_loss"] for c in curve], **kw)
            axes[1].plot(x, [100 * c["mlm_accuracy"] for c in curve], **kw)
        for arm, curves in by_arm.items():           # band: the range over pre-training seeds (where several)
            if len(curves) < 2 or len({len(c) for c in curves}) > 1:
                continue
            x = [c["tokens"] / 1e6 for c in curves[0]]
            for ax, key, k in ((axes[0], "mlm_loss", 1), (axes[1], "mlm_accuracy", 100)):
                ys = [[k * c[i][key] for c in curves] for i in range(len(x))]
                ax.fill_between(x, [min(v) for v in ys], [max(v) for v in ys], color=colour[arm], alpha=0.15, lw=0,
                                label=f"{arm}: seed range")
        reference_lines(axes[0], res)
        axes[0].set_ylabel("held-out MLM loss (nats)")
        axes[1].set_ylabel("held-out masked-token accuracy (%)")
        for ax in axes[:2]:
            ax.set_xlabel("tokens seen (M)")
            legend_outside(ax)
        _premise_gaps(axes[2], p, colour)
        gaps = ", ".join(f"{g['gap']:+.3f}" for g in p["gaps"])
        verdict = "holds" if p["holds"] else "does not hold"
        need = (f"needed ≥ {p['required_gap']:.3f}" if p["required_gap"] == p["required_gap"]
                else "one pre-training seed: spread unknown")
        many = [f"{a} {k}" for a, k in n_seeds.items() if a in colour and k > 1]
        design = (f"pre-training seeds: {', '.join(many) or 'one per model'} (band: their range; dashed: "
                  f"the second and later seeds), every other model 1" if many else "one pre-training seed per model")
        fig.suptitle(f"Premise {verdict}: final held-out loss gaps, student to each weaker teacher in turn, {gaps} "
                     f"nats ({need}); {res['provenance']['profile']} profile\n{design}", fontsize=10)
        save(fig, result_path, "03_premise")
    return fig


def _premise_gaps(ax, p: dict, colour: dict) -> None:
    """Each adjacent gap (higher-loss model minus lower) against tokens, log scale, with its fitted trend
    over the second half of the run extended (dotted: an extrapolation) to where it reaches the required gap."""
    import math

    need = p["required_gap"]
    t_max = 0.0
    for g in p["gaps"]:
        tr = g["trend"]
        if not tr["points"]:
            continue
        c = colour.get(g["higher"], "grey")
        lo = "student" if g["lower"] == "student" else g["lower"][8:]
        ax.plot([t / 1e6 for t, _ in tr["points"]], [y for _, y in tr["points"]], marker=".", color=c, lw=1.4,
                label=f"{g['higher'][8:]} − {lo}")
        t_max = max(t_max, tr["points"][-1][0])
        if tr["fit"] is not None and not g["ok"]:
            a, b = tr["fit"]
            t0 = TREND_FROM * tr["tokens_now"]                # where the fit starts (the run's second half)
            t1 = tr["tokens_needed"] if tr["tokens_needed"] and not tr["beyond"] else 30 * tr["tokens_now"]
            ts = [t0 * (t1 / t0) ** (i / 40) for i in range(41)]
            ax.plot([t / 1e6 for t in ts], [a + b * math.log(t) for t in ts], ls=":", color=c, lw=1.2)
            if tr["tokens_needed"] and not tr["beyond"] and tr["tokens_needed"] > tr["tokens_now"]:
                ax.plot([tr["tokens_needed"] / 1e6], [need], marker="o", color=c, mfc="white")
    if need == need:
        ax.axhline(need, color="black", lw=0.8, ls="--", label=f"required gap {need:.3f}")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xscale("log")
    # ticks at 1, 2, 5 x 10^k, written plainly; no labels on the minor ticks (they collided within one decade)
    # over more than two decades (an extrapolation far out) 1 x 10^k only: 2 and 5 ran into each other
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0) if hi / lo <= 100 else (1.0,)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylabel("loss gap (nats; > 0: the larger model is better)")
    ax.set_title("gaps, and their trend extrapolated (dotted)", fontsize=9)
    ax.set_xlabel("tokens seen (M)")
    legend_outside(ax)


def over_training(result_path: Path, name: str):
    """Fig. 3 / 4: per-task fine-tuning score at each pre-training snapshot, one panel per task,
    mean over seeds with the range over every (pre-training, fine-tuning) seed pair shaded, and the task's
    majority-class baseline where the scores approach it. A task on which no model beats that baseline by 2
    points says so in its panel, above the scores it draws."""
    res = read_json(result_path)
    tasks = res["tasks"]
    dead = set(baseline_tasks(res["scores"]))
    st = run_styles(res["runs"])
    with style():
        # constrained layout keeps the figure title clear of the panel titles, and the legends clear of the panels
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks) + 2.4, 3.4), squeeze=False,
                                 layout="constrained")
        for ax, task in zip(axes[0], tasks):
            ax.set_title(task.upper())
            ax.set_xlabel("fraction of pre-training")
            ax.set_ylabel(f"{task.upper()} validation score")
            ax.set_xticks(res["fractions"])
            rows = [s for s in res["scores"] if s["task"] == task]
            base = [s["majority_baseline"] for s in rows if s.get("majority_baseline") is not None]
            b = sum(base) / len(base) if base else None
            if task in dead:            # the scores are still drawn: the box says why they are flat
                ax.text(0.5, 0.97, f"every model within 2 points of the majority-class\nbaseline ({b or 0.0:.1f}, "
                        f"dashed): no transfer to compare on {task.upper()}", transform=ax.transAxes, ha="center",
                        va="top", fontsize=8, color="#444444",
                        bbox=dict(boxstyle="round,pad=0.4", fc="#f4f4f4", ec="#cccccc"))
            curves, values = {}, []
            for run in res["runs"]:
                pts = sorted((s["fraction"], s["mean"], min(s["scores"]), max(s["scores"]))
                             for s in rows if s["run"] == run)
                if pts:
                    curves[run] = pts
                    values += [v for p in pts for v in p[1:]]
            same = identical({r: [p[1:] for p in pts] for r, pts in curves.items()})
            for run, pts in curves.items():
                x, m, lo, hi = zip(*pts)
                c, mk = st[run]["color"], st[run]["marker"]
                ax.plot(x, m, marker=mk, color=c, ls="--" if run in same else "-",
                        label=same_label(_label(run, res), run, same, "scores", {n: _label(n, res) for n in curves}))
                ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
            majority_line(ax, b, values)
            ax.plot([], [], color="#999999", alpha=0.3, lw=6, label="band: range over seeds")
            legend_outside(ax)
        comps = over_training_comparisons(res)
        said = (f"\n{sum(c['resolved'] for c in comps)} of {len(comps)} differences resolved (> 2 SE)"
                if comps else "")
        fig.suptitle(f"{_title(res)} ({res['provenance']['profile']} profile; {seed_design(res)}){said}",
                     fontsize=10)
        save(fig, result_path, name)
    return fig


def loss_curves(result_path: Path, name: str):
    """Pre-training losses against step for each run of a study: the hard (MLM) loss with the reference levels
    (ln V, unigram), the soft loss KL, the soft weight a_s, and the soft term as the loss weighs it, a_s x KL,
    beside the hard loss: its share of the loss at the first and last log line is in the legend."""
    res = read_json(result_path)
    logs = {run: log for run, log in res["logs"].items() if log}
    st = run_styles(res["logs"])
    with style():
        fig, axes = plt.subplots(2, 2, figsize=(12, 6.4), layout="constrained")
        ax_h, ax_s, ax_a, ax_w = axes.ravel()
        panels = ((ax_h, "hard"), (ax_s, "soft"), (ax_a, "alpha_soft"))
        for ax, key in panels:
            same = identical({run: [(r["step"], r[key]) for r in log] for run, log in logs.items()})
            for run, log in logs.items():
                c, mk, label = st[run]["color"], st[run]["marker"], _label(run, res)
                ax.plot([r["step"] for r in log], [r[key] for r in log], color=c, marker=mk, ms=4,
                        markevery=max(1, len(log) // 8), ls="--" if run in same else "-",
                        label=same_label(label, run, same, names={n: _label(n, res) for n in logs}))
                ev = [(r["step"], r["eval_mlm_loss"]) for r in log if "eval_mlm_loss" in r]
                if key == "hard" and ev:
                    ax.plot(*zip(*ev), color=c, ls=":", marker=".", alpha=0.8)
        if any("eval_mlm_loss" in r for log in logs.values() for r in log):
            ax_h.plot([], [], color="#555555", ls=":", marker=".", label="dotted: held-out")
        reference_lines(ax_h, res)
        # the soft term as weighted in the loss (Eq. 3: hard + a_s x KL) against the hard loss
        for run, log in logs.items():
            w = [(r["step"], r["alpha_soft"] * r["soft"], r["hard"]) for r in log if r["alpha_soft"] * r["soft"] > 0]
            if not w:
                continue
            share = [a / (a + h) for _, a, h in w]
            c, mk = st[run]["color"], st[run]["marker"]
            ax_w.plot([x for x, _, _ in w], [a for _, a, _ in w], color=c, marker=mk, ms=4,
                      markevery=max(1, len(w) // 8),
                      label=f"{_label(run, res)}: {100 * share[0]:.0f}% of the loss → {100 * share[-1]:.0f}%")
            ax_w.plot([x for x, _, _ in w], [h for _, _, h in w], color=c, lw=0.8, ls=(0, (2, 2)), alpha=0.8)
        if ax_w.has_data():
            ax_w.plot([], [], color="#555555", lw=0.8, ls=(0, (2, 2)), label="dashed: hard loss, same run")
            ax_w.set_yscale("log")
        else:
            ax_w.text(0.5, 0.5, "no run with a soft term (a_s x KL = 0 throughout)", transform=ax_w.transAxes,
                      ha="center", color="#555555")
        titles = ("hard loss: MLM cross-entropy (solid: training)", "soft loss: KL(teacher || student)",
                  "soft weight a_s", "soft term as weighted, a_s x KL (solid), against the hard loss")
        ylabels = ("nats", "nats", "a_s", "nats (log scale)")
        for ax, t, yl in zip(axes.ravel(), titles, ylabels):
            ax.set_title(t, fontsize=9)
            ax.set(xlabel="step", ylabel=yl)
            if ax.get_legend_handles_labels()[0]:
                legend_outside(ax)
        a_s = {r["alpha_soft"] for log in logs.values() for r in log}
        if len(a_s) == 1:           # one flat line: say so, rather than a zoomed axis around it
            ax_a.text(0.5, 0.35, f"a_s = {a_s.pop():g} throughout, for every run", transform=ax_a.transAxes,
                      ha="center", fontsize=9, color="#555555")
        fig.suptitle(f"{_title(res)}: pre-training losses ({res['provenance']['profile']} profile; the first "
                     f"pre-training seed of each run)", fontsize=10)
        save(fig, result_path, name)
    return fig


def _label(run: str, res: dict) -> str:
    if res["study"] == "soft_weight":
        spec = res.get("schedules", {}).get(run, {})
        if spec.get("kind") == "constant":
            return f"{run[5:]} (a_s={spec['value']:g})"
        if spec.get("kind") in ("linear", "cosine"):
            return f"{run[5:]} (a_s {spec['start']:g}→{spec['end']:g})"
        return run
    if res["study"] == "param_remap":
        return "PR (O): remapped init" if run.startswith("remap-") else "PR (X): random init"
    return run


def _title(res: dict) -> str:
    return {"soft_weight": "Soft-loss weight", "param_remap": "Parameter remapping"}.get(res["study"], res["study"])


# ----------------------------------------------------------------------------- comparing runs of the registry

def registry_runs(runs_dir: Path) -> dict[str, dict]:
    """Finished pre-training runs in ``outputs/<profile>/runs/``, by id: name, kind, held-out MLM loss, training
    log, and the fine-tuning scores of their snapshots (from the finished fine-tuning runs that name them).
    Folders that are unfinished or unreadable are left out; ``dwt runs`` says why."""
    pre, ft = {}, []
    for d in sorted(Path(runs_dir).glob("*-*")):
        try:
            meta, res = read_json(d / "run.json"), read_json(d / "result.json")
        except (OSError, ValueError):
            continue
        if meta.get("kind") == "finetune":
            ft.append({"pretrain": meta["key"].get("pretrain"), "task": res.get("task"), "seed": res.get("seed"),
                       "fraction": res.get("fraction", meta["key"].get("fraction")), "score": res.get("score"),
                       "majority_baseline": res.get("majority_baseline")})
            continue
        log = d / "log.jsonl"
        pre[d.name] = {"id": d.name, "name": meta.get("name"), "kind": meta.get("kind"),
                       "mlm_loss": (res.get("final_eval") or {}).get("mlm_loss"),
                       "log": read_log(log), "scores": []}
    for s in ft:
        if s["pretrain"] in pre and s["score"] is not None:
            pre[s["pretrain"]]["scores"].append(s)
    return pre


def compare_runs(runs_dir: Path, chosen: dict[str, str], save_as: str | None = None, reference: dict | None = None):
    """Overlay chosen runs of one profile: pre-training MLM loss against step (solid: training, dotted: held-out)
    and fine-tuning scores per task at each run's last snapshot (mean over seeds, bar; seed range, whisker;
    the task's majority-class baseline, dashed, where the fine-tuning results record it).

    ``chosen`` maps run id -> label (see :func:`dwt_lib.notebook.explore.resolve_runs`). ``reference``
    (:func:`dwt_lib.studies.reference.mlm_reference`) adds ln V and the unigram loss to the loss panel. With
    ``save_as`` the figure is saved as ``outputs/<profile>/figures/<save_as>.png|svg``."""
    import numpy as np
    reg = registry_runs(runs_dir)
    missing = [i for i in chosen if i not in reg]
    if missing:
        raise ValueError(f"not finished (or not in {runs_dir}): {', '.join(missing)}")
    with style():
        fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(13, 3.8), layout="constrained")
        tasks = sorted({s["task"] for i in chosen for s in reg[i]["scores"]})
        width = 0.8 / max(len(chosen), 1)
        st = {rid: v for rid, v in zip(chosen, run_styles([f"run{k}" for k in range(len(chosen))]).values())}
        same = identical({rid: [(e["step"], e["hard"]) for e in reg[rid]["log"] if "hard" in e] for rid in chosen})
        base = {}
        for k, (rid, label) in enumerate(chosen.items()):
            r, c, mk = reg[rid], st[rid]["color"], st[rid]["marker"]
            loss = f" (held-out {r['mlm_loss']:.3f})" if r["mlm_loss"] is not None else ""
            steps = [e["step"] for e in r["log"] if "hard" in e]
            tag = f" (curve identical to {chosen[same[rid]]}'s)" if rid in same else ""
            ax_l.plot(steps, [e["hard"] for e in r["log"] if "hard" in e], color=c, lw=1, marker=mk, ms=4,
                      markevery=max(1, len(steps) // 8), ls="--" if rid in same else "-", label=label + loss + tag)
            ev = [(e["step"], e["eval_mlm_loss"]) for e in r["log"] if "eval_mlm_loss" in e]
            if ev:
                ax_l.plot(*zip(*ev), color=c, ls=":", marker=".")
            for j, t in enumerate(tasks):
                sc = [s for s in r["scores"] if s["task"] == t]
                if not sc:
                    continue
                last = max(s["fraction"] for s in sc)
                v = [s["score"] for s in sc if s["fraction"] == last]
                base.setdefault(j, []).extend(s["majority_baseline"] for s in sc if s.get("majority_baseline")
                                              is not None)
                x = j - 0.4 + width * (k + 0.5)
                ax_s.bar(x, np.mean(v), width, color=c, alpha=0.85, hatch=None, label=label if j == 0 else None)
                ax_s.plot([x, x], [min(v), max(v)], color="#333333", lw=1)
        reference_lines(ax_l, {"reference": reference})
        ax_l.set(title="pre-training MLM loss (dotted: held-out)", xlabel="step", ylabel="nats")
        legend_outside(ax_l)
        if tasks:
            for j, b in base.items():
                if b:
                    ax_s.plot([j - 0.45, j + 0.45], [np.mean(b)] * 2, color="#555555", ls=(0, (4, 2)), lw=1,
                              label="majority-class baseline" if j == min(base) else None)
            ax_s.plot([], [], color="#333333", lw=1, label="whisker: seed range")
            ax_s.set_xticks(range(len(tasks)), [t.upper() for t in tasks])
            ax_s.set(title="fine-tuning score at the last snapshot (mean; whisker: seed range)",
                     ylabel="validation score")
            legend_outside(ax_s)
        else:
            ax_s.text(0.5, 0.5, "no fine-tuning results for these runs yet", ha="center", va="center",
                      transform=ax_s.transAxes, color="#666666")
            ax_s.set_axis_off()
        ax_l.title.set_fontsize(9)
        ax_s.title.set_fontsize(9)
        if save_as:
            save(fig, Path(runs_dir).parent / "results" / "compare_runs.json", save_as)   # -> <profile>/figures/
    return fig


# ----------------------------------------------------------------------------- notebook 06

def beyond(result_path: Path, question: str):
    """Notebook 06, one question: held-out MLM loss over steps and the mean fine-tuning score (over the study
    tasks; band: range over fine-tuning seeds) at each snapshot for the arm(s) and the runs they are compared
    with; for the soft weight also the effective a_s and the teacher-aware arm's running hard losses, for
    growth the new layers' gate m."""
    res = read_json(result_path)
    if question not in res["questions"]:
        with style():
            fig, ax = plt.subplots(figsize=(6, 1.2))
            ax.text(0.5, 0.5, f"no arm of this profile asks '{question}' (studies.beyond)", ha="center", va="center")
            ax.set_axis_off()
        return fig
    q = res["questions"][question]
    extra = {"soft_weight": ["a_s", "ema"], "growth": ["gate"]}.get(question, [])
    st = run_styles(q["runs"])
    logs = {n: res["logs"].get(n, []) for n in q["runs"]}
    ids = {n: (res["runs"].get(n) or {}).get("id") for n in q["runs"]}
    evs = {n: [(r["step"], r["eval_mlm_loss"]) for r in log if "eval_mlm_loss" in r] for n, log in logs.items()}
    loss_labels = overlap_labels(evs, ids)
    same_as = identical({n: [(r["step"], r["alpha_soft"]) for r in log] for n, log in logs.items()}, ids)
    sbf = res["score_by_fraction"]
    same_score = identical({n: [(p["fraction"], p["mean"], p["lo"], p["hi"]) for p in sbf[n]] for n in q["runs"]}, ids)
    with style():
        n_ax = 2 + len(extra)       # two panels a row: each keeps its legend at its side
        fig, grid = plt.subplots((n_ax + 1) // 2, 2, figsize=(12, 3.4 * ((n_ax + 1) // 2)), squeeze=False,
                                 layout="constrained")
        axes = list(grid.ravel())
        for ax in axes[n_ax:]:
            fig.delaxes(ax)
        axes = axes[:n_ax]
        values = []
        for n in q["runs"]:
            log, c, mk = logs[n], st[n]["color"], st[n]["marker"]
            ls = "-" if n in q["arms"] else "--"
            if evs[n]:       # an identical or nearly identical curve: thinner, on top, so that both show
                label, on_top = loss_labels[n]
                axes[0].plot(*zip(*evs[n]), color=c, ls=ls, marker=mk, ms=4, lw=1 if on_top else 1.6,
                             zorder=3 if on_top else 2, label=label)
            pts = sbf[n]
            x = [p["fraction"] for p in pts]
            values += [v for p in pts for v in (p["lo"], p["hi"])]
            axes[1].plot(x, [p["mean"] for p in pts], color=c, ls=ls, marker=mk, label=same_label(n, n, same_score,
                                                                                                  "scores"))
            axes[1].fill_between(x, [p["lo"] for p in pts], [p["hi"] for p in pts], color=c, alpha=0.12, lw=0)
            for ax, what in zip(axes[2:], extra):
                if what == "a_s" and log:
                    ax.plot([r["step"] for r in log], [r["alpha_soft"] for r in log], color=c, ls=ls, marker=mk, ms=4,
                            markevery=max(1, len(log) // 8), lw=1 if n in same_as else 1.6,
                            label=same_label(n, n, same_as))
                if what == "ema" and log and "ema_student" in log[0]:
                    steps = [r["step"] for r in log]
                    ax.plot(steps, [r["ema_student"] for r in log], color=c, label=f"{n}: student")
                    ax.plot(steps, [r["ema_teacher"] for r in log], color="#333333", ls=":", label=f"{n}: teacher")
                if what == "gate" and log and "gate" in log[0]:       # m = 0 at step 0, before the first log line
                    ax.plot([0] + [r["step"] for r in log], [0.0] + [r["gate"] for r in log], color=c,
                            marker=mk, ms=4, markevery=max(1, len(log) // 8), label=n)
                    ax.set_ylim(-0.05, 1.05)
        reference_lines(axes[0], res)
        base = majority_glue({**res, "scores": [s for s in res.get("scores", []) if s["run"] in q["runs"]]})
        if base is not None:
            majority_line(axes[1], base, values, label="majority-class baseline (mean)")
        axes[1].plot([], [], color="#999999", alpha=0.3, lw=6, label="band: range over seeds")
        titles = {"a_s": "effective soft weight a_s", "ema": "running hard loss (EMA), same tokens",
                  "gate": "new layers' gate m (0: identity)"}
        ylabels = {"a_s": "a_s", "ema": "nats", "gate": "m"}
        axes[0].set(title="held-out MLM loss (solid: the arms; dashed: compared runs)", xlabel="step", ylabel="nats")
        axes[1].set(title=f"mean score over {', '.join(t.upper() for t in res['tasks'])}",
                    xlabel="fraction of pre-training", xticks=res["fractions"], ylabel="validation score")
        for ax, what in zip(axes[2:], extra):
            ax.set(title=titles[what], xlabel="step", ylabel=ylabels[what])
        for ax in axes:
            ax.title.set_fontsize(9)
            if ax.get_legend_handles_labels()[0]:
                legend_outside(ax)
        last = max(res["fractions"])
        at_end = [c for c in res["questions"][question]["comparisons"] if c["fraction"] == last]
        fig.suptitle(f"{TITLES[question]} ({res['provenance']['profile']} profile; "
                     f"{seed_design(res, [n for n in q['runs'] if n in res['runs']])})\n"
                     f"{sum(c['resolved'] for c in at_end)} of {len(at_end)} differences at the end "
                     f"resolved (> 2 SE)", fontsize=10)
        save(fig, result_path, f"06_{question}")
    return fig
