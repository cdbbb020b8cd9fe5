"""Knobs for exploring the notebooks in JupyterLab. Each view is a library function that draws a figure or a
table; ipywidgets only wrap it, so nothing in a notebook holds logic.

Every view takes ``interactive``. With ``interactive=False`` (what ``dwt reproduce`` passes through papermill)
it draws its default once, as plain cell output, with no widget: executed notebooks stay static and readable.
With ``interactive=True`` (the notebooks' default, for JupyterLab) sliders or a run picker redraw it. Under nbval
the widgets are built and drawn once at their defaults (no browser renders them; their outputs are not compared).
"""
from __future__ import annotations

import math
from typing import Optional

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import display

from dwt_lib.notebook import plots
from dwt_lib.models.losses import hard_loss, soft_loss
from dwt_lib.runs.registry import registry_root
from dwt_lib.studies.identity import all_run_names, named_run, seed_runs, study_runs


def _show(fig) -> None:
    """Display a figure as an image (also inside an ``Output`` widget) and free it."""
    display(fig)
    plt.close(fig)


# ----------------------------------------------------------------------------- notebook 02: temperature, a_s

def softened_teacher_figure(logits: torch.Tensor, tau: float, top: int = 30, reference: float = 1.0):
    """The teacher's probabilities of its ``top`` most likely tokens at temperature ``tau``, beside
    ``reference`` (grey) and the uniform 1/V (dashed), log scale; the title gives both entropies."""
    row = torch.sort(logits.double(), descending=True).values
    V = row.numel()

    def probs(t):
        return F.softmax(row / t, -1)

    def entropy(t):
        return -(probs(t) * F.log_softmax(row / t, -1)).sum().item()

    with plots.style():
        fig, ax = plt.subplots(figsize=(7, 3.4))
        ranks = range(1, top + 1)
        ax.plot(ranks, probs(reference)[:top], color="#999999", marker="o", ms=3, label=rf"$\tau$ = {reference:g}")
        ax.plot(ranks, probs(tau)[:top], color=plots.COLORS["dwt"], marker="o", ms=4, lw=2, label=rf"$\tau$ = {tau:.3g}")
        ax.axhline(1 / V, color="grey", ls="--", lw=1, label="uniform 1/V")
        ax.set(xlabel="token rank under the teacher", ylabel=r"$p_\omega^\tau$", yscale="log",
               title=rf"teacher entropy {entropy(tau):.2f} nats at $\tau$ = {tau:.3g} "
                     rf"({entropy(reference):.2f} at {reference:g}; uniform log V = {math.log(V):.2f})")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return fig


def gradient_scale_table(z_s: torch.Tensor, z_t: torch.Tensor, labels: torch.Tensor, tau: float,
                         alpha_hard: float, alpha_soft: float):
    """Norm of the gradient that each term of Eq. 3 sends into the student logits, at temperature ``tau``,
    on the masked positions (``labels != -100``): the hard term, the soft term without and with tau^2,
    and both weighted as in the objective. The last column puts each beside the weighted hard term."""
    import pandas as pd
    mask = labels != -100
    z = z_s.detach().double().requires_grad_(True)
    zt = z_t.double()

    def gnorm(loss):
        return torch.autograd.grad(loss, z)[0].norm().item()

    hard = alpha_hard * gnorm(hard_loss(z, labels))
    soft_plain = gnorm(soft_loss(z, zt, temperature=tau, mask=mask, scale_by_t2=False))
    soft_t2 = gnorm(soft_loss(z, zt, temperature=tau, mask=mask, scale_by_t2=True))
    rows = [(f"a_h x hard (a_h = {alpha_hard:.3g})", hard),
            (r"soft, without tau^2", soft_plain),
            (r"soft, with tau^2", soft_t2),
            (f"a_s x soft, with tau^2 (a_s = {alpha_soft:.3g})", alpha_soft * soft_t2)]
    df = pd.DataFrame(rows, columns=["term", "|gradient|"]).set_index("term")
    df["vs a_h x hard"] = df["|gradient|"] / hard
    df.columns.name = f"tau = {tau:.3g}"
    return df


def temperature_explorer(teacher_row: torch.Tensor, z_s: torch.Tensor, z_t: torch.Tensor, labels: torch.Tensor,
                         tau: float, alpha_hard: float, alpha_soft: float, interactive: bool = True):
    """Sliders for the temperature and the soft weight over :func:`softened_teacher_figure` and
    :func:`gradient_scale_table`; with ``interactive=False`` both are drawn once at ``tau`` and ``alpha_soft``.
    Returns the widget (or None)."""
    def draw(tau, alpha_soft):
        _show(softened_teacher_figure(teacher_row, tau))
        display(gradient_scale_table(z_s, z_t, labels, tau, alpha_hard, alpha_soft).style.format("{:.4g}"))

    if not interactive:
        draw(tau, alpha_soft)
        return None
    import ipywidgets as w
    style = {"description_width": "initial"}
    t = w.FloatLogSlider(value=tau, base=2, min=-2, max=5, step=0.25, description="temperature τ", style=style,
                         continuous_update=False)
    a = w.FloatSlider(value=alpha_soft, min=0.0, max=8.0, step=0.25, description="soft weight a_s", style=style,
                      continuous_update=False)
    box = w.VBox([w.HBox([t, a]), w.interactive_output(draw, {"tau": t, "alpha_soft": a})])
    display(box)
    return box


# ----------------------------------------------------------------------------- notebooks 03-05: compare runs

def resolve_runs(cfg, names: list[str]) -> dict[str, str]:
    """Run names of the profile (``dwt-weak``, ``soft-strong``, ...), registry names or run ids -> ``{id: label}``.

    A profile name is hashed as the studies would (so ``soft-normal`` finds the ``dwt-weak`` run it shares);
    anything else must be a finished run's id or recorded name. Raises ValueError naming the finished runs."""
    reg = plots.registry_runs(registry_root(cfg) / "runs")   # read-only mode: the exported registry
    by_name = {r["name"]: i for i, r in reg.items()}
    known = set(all_run_names(cfg))
    out = {}
    for n in names:
        rid = named_run(cfg, n).id if n in known else (n if n in reg else by_name.get(n))
        if rid not in reg:
            have = ", ".join(sorted(by_name)) or "none yet"
            raise ValueError(f"run '{n}' is not a finished run of profile {cfg.profile} (finished: {have}); "
                             f"`dwt runs --profile {cfg.profile}` lists every run")
        out[rid] = n
    return out


def finished_runs_table(cfg):
    """The profile's finished pre-training runs: name, id, kind, held-out MLM loss, fine-tuning results."""
    import pandas as pd
    reg = plots.registry_runs(registry_root(cfg) / "runs")
    rows = [{"run": r["name"], "id": i, "kind": r["kind"], "held-out MLM loss": r["mlm_loss"],
             "fine-tuning results": len(r["scores"])} for i, r in reg.items()]
    return pd.DataFrame(rows, columns=["run", "id", "kind", "held-out MLM loss", "fine-tuning results"])


def default_runs(cfg, study: str) -> list[str]:
    """The runs a comparison starts from: the study's students (its teachers only in their own study)."""
    return [n for n in study_runs(cfg, study) if not n.startswith("teacher-")]


def compare_runs(cfg, study: Optional[str] = None, interactive: bool = True, default: Optional[list[str]] = None):
    """List the profile's finished runs and overlay chosen ones with :func:`dwt_lib.notebook.plots.compare_runs`
    (loss curves and fine-tuning scores). The runs drawn first (and, with ``interactive=False``, the only ones):
    ``default``, else the study's students. Returns the picker widget (or None)."""
    runs_dir = registry_root(cfg) / "runs"
    table = finished_runs_table(cfg)
    if study and not table.empty:            # the table shows this notebook's runs; the picker offers every run
        mine = {named_run(cfg, r).id for n in study_runs(cfg, study) for r in seed_runs(cfg, n)}
        shown = table[table["id"].isin(mine)]
        display(shown)
        if len(shown) < len(table):
            print(f"{len(table) - len(shown)} more finished run(s) of this profile in the registry "
                  f"(`dwt runs --profile {cfg.profile}`; pick them below in JupyterLab)")
    else:
        display(table)
    if table.empty:
        print(f"no finished runs in {runs_dir} yet: run the study above first")
        return None
    chosen = resolve_runs(cfg, default if default is not None else default_runs(cfg, study))

    def draw(ids):
        if not ids:
            print("choose one or more runs (Ctrl/Shift-click)")
            return
        reg_names = dict(zip(table["id"], table["run"]))
        _show(plots.compare_runs(runs_dir, {i: chosen.get(i, reg_names[i]) for i in ids}))

    if not interactive:
        draw(list(chosen))
        return None
    import ipywidgets as w
    options = [(f"{n} ({i})", i) for n, i in zip(table["run"], table["id"])]
    pick = w.SelectMultiple(options=options, value=[i for i in chosen], rows=min(len(options), 10),
                            description="runs", layout=w.Layout(width="420px"))
    box = w.VBox([pick, w.interactive_output(lambda ids: draw(list(ids)), {"ids": pick})])
    display(box)
    return box
