"""The notebooks' knobs (dwt_lib.explore), the run comparison (plots.compare_runs, `dwt runs --plot`) and the
figure fixes: over-training panels at the majority baseline say so, the title clears the panel titles."""
from __future__ import annotations

import json

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from dwt_lib import cli  # noqa: E402
from dwt_lib.notebook import explore, plots
from dwt_lib.studies import results
from dwt_lib.config.load import load_params  # noqa: E402
from dwt_lib.core.io import atomic_write_json  # noqa: E402
from dwt_lib.runs.registry import outputs_dir
from dwt_lib.studies.identity import named_run  # noqa: E402


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    V = 50
    z_s, z_t = torch.randn(2, 8, V, generator=g) * 2, torch.randn(2, 8, V, generator=g) * 2
    labels = torch.full((2, 8), -100)
    labels[0, 1], labels[1, 3] = 7, 9
    return z_s, z_t, labels


def test_gradient_scale_table_tau2_keeps_the_soft_gradient_on_one_scale(logits):
    z_s, z_t, labels = logits
    t8, t16 = (explore.gradient_scale_table(z_s, z_t, labels, tau, 1.0, 3.0)["|gradient|"] for tau in (8.0, 16.0))
    plain, with_t2 = "soft, without tau^2", "soft, with tau^2"
    assert t16[plain] / t8[plain] == pytest.approx(1 / 4, rel=0.15)       # falls like 1/tau^2 without it
    assert t16[with_t2] / t8[with_t2] == pytest.approx(1.0, rel=0.15)      # and is flat with it
    assert t8.iloc[3] == pytest.approx(3.0 * t8[with_t2])                  # a_s scales the soft term
    assert t8.iloc[0] == pytest.approx(t16.iloc[0])                        # hard term: no tau


def _capture(monkeypatch):
    shown = []
    monkeypatch.setattr(explore, "display", lambda obj: shown.append(obj))
    return shown


def test_temperature_explorer_static_draws_figure_and_table_without_widgets(logits, monkeypatch):
    z_s, z_t, labels = logits
    shown = _capture(monkeypatch)
    assert explore.temperature_explorer(torch.randn(50), z_s, z_t, labels, 2.0, 1.0, 1.0, interactive=False) is None
    kinds = [type(o).__name__ for o in shown]
    assert kinds == ["Figure", "Styler"], kinds
    assert "τ = 2" in shown[0].axes[0].get_legend().get_texts()[1].get_text().replace("$\\tau$", "τ")


def test_temperature_explorer_sliders_redraw(logits, monkeypatch):
    pytest.importorskip("ipywidgets")
    z_s, z_t, labels = logits
    _capture(monkeypatch)
    seen = []
    real = explore.gradient_scale_table
    monkeypatch.setattr(explore, "gradient_scale_table", lambda *a: seen.append(a[3:]) or real(*a))
    box = explore.temperature_explorer(torch.randn(50), z_s, z_t, labels, 1.0, 1.0, 1.0, interactive=True)
    tau_slider, alpha_slider = box.children[0].children
    tau_slider.value = 4.0
    alpha_slider.value = 2.5
    assert seen == [(1.0, 1.0, 1.0), (4.0, 1.0, 1.0), (4.0, 1.0, 2.5)]


# ----------------------------------------------------------------------------- a fake registry

def _pretrain(cfg, name, losses, eval_loss):
    run = named_run(cfg, name)
    atomic_write_json(run.dir / "run.json", {"kind": run.kind, "name": name, "id": run.id, "key": run.key})
    atomic_write_json(run.dir / "result.json", {"final_eval": {"mlm_loss": eval_loss},
                                                     "provenance": {"wall_time_s": 1.0}})
    (run.dir / "log.jsonl").write_text("".join(json.dumps({"step": i, "hard": v}) + "\n" for i, v in enumerate(losses))
                                       + json.dumps({"step": len(losses), "eval_mlm_loss": eval_loss}) + "\n")
    return run


def _finetune(cfg, pre, task, seed, score):
    d = outputs_dir(cfg) / "runs" / f"finetune-{pre.id[-6:]}{task}{seed}"
    atomic_write_json(d / "run.json", {"kind": "finetune", "name": f"{pre.name}/{task}/s{seed}",
                                       "key": {"pretrain": pre.id, "fraction": 1.0, "task": task, "seed": seed}})
    atomic_write_json(d / "result.json", {"task": task, "seed": seed, "fraction": 1.0, "score": score,
                                          "provenance": {"wall_time_s": 1.0}})


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    cfg = load_params("smoke")
    student = _pretrain(cfg, "student", [7.0, 6.5, 6.2], 6.3)
    dwt = _pretrain(cfg, "dwt-weak", [7.0, 6.4, 6.0], 6.1)
    for seed, (a, b) in enumerate([(50.0, 55.0), (52.0, 57.0)], 1):
        _finetune(cfg, student, "sst2", seed, a)
        _finetune(cfg, dwt, "sst2", seed, b)
    partial = named_run(cfg, "teacher-weak")         # started, not finished: never offered
    atomic_write_json(partial.dir / "run.json", {"kind": "teacher", "name": "teacher-weak", "key": partial.key})
    return cfg, student, dwt


def test_registry_runs_reads_finished_runs_and_their_scores(registry):
    cfg, student, dwt = registry
    reg = plots.registry_runs(outputs_dir(cfg) / "runs")
    assert set(reg) == {student.id, dwt.id}
    assert sorted(s["score"] for s in reg[dwt.id]["scores"]) == [55.0, 57.0]
    assert reg[student.id]["mlm_loss"] == 6.3


def test_compare_runs_overlays_losses_and_scores(registry):
    cfg, student, dwt = registry
    chosen = explore.resolve_runs(cfg, ["student", "soft-normal"])    # soft-normal is the dwt-weak run
    assert chosen == {student.id: "student", dwt.id: "soft-normal"}
    fig = plots.compare_runs(outputs_dir(cfg) / "runs", chosen)
    ax_l, ax_s = fig.axes
    assert [t.get_text() for t in ax_l.get_legend().get_texts()] == ["student (held-out 6.300)",
                                                                   "soft-normal (held-out 6.100)"]
    assert sorted(round(b.get_height(), 1) for b in ax_s.patches) == [51.0, 56.0]   # mean over the two seeds


def test_resolve_runs_names_the_finished_runs_when_one_is_unknown(registry):
    cfg, _, _ = registry
    with pytest.raises(ValueError, match=r"teacher-weak' is not a finished run .*finished: dwt-weak, student"):
        explore.resolve_runs(cfg, ["teacher-weak"])


def test_compare_runs_static_draws_the_default_once(registry, monkeypatch):
    cfg, _, _ = registry
    shown = _capture(monkeypatch)
    assert explore.compare_runs(cfg, default=["student", "dwt-weak"], interactive=False) is None
    assert [type(o).__name__ for o in shown] == ["DataFrame", "Figure"]
    assert list(shown[0]["run"]) == ["dwt-weak", "student"] or set(shown[0]["run"]) == {"dwt-weak", "student"}


def test_cli_runs_plot(registry, capsys):
    cfg, _, _ = registry
    assert cli.main(["runs", "--profile", "smoke", "--plot", "student", "dwt-weak"]) == 0
    assert (outputs_dir(cfg) / "figures" / "compare_runs.png").exists()
    assert "compare_runs.png" in capsys.readouterr().out
    assert cli.main(["runs", "--profile", "smoke", "--plot", "nosuch"]) == 2
    assert "'nosuch' is not a finished run" in capsys.readouterr().err


# ----------------------------------------------------------------------------- figure fixes (issue 10)

def _over_training_result(tmp_path):
    scores = []
    for run in ("soft-normal", "soft-strong"):
        for fr in (0.5, 1.0):
            scores.append({"run": run, "fraction": fr, "task": "cola", "mean": 0.0, "scores": [0.0, 0.0],
                           "majority_baseline": 0.0})
            scores.append({"run": run, "fraction": fr, "task": "sst2", "mean": 55.0 + fr, "scores": [54.0, 57.0],
                           "majority_baseline": 50.0})
    res = {"study": "soft_weight", "tasks": ["cola", "sst2"], "fractions": [0.5, 1.0], "seeds": [1, 2],
           "runs": {"soft-normal": {}, "soft-strong": {}}, "scores": scores, "provenance": {"profile": "test"},
           "schedules": {"soft-normal": {"kind": "constant", "value": 1.0},
                         "soft-strong": {"kind": "constant", "value": 4.0}}}
    p = tmp_path / "test" / "results" / "soft_weight.json"
    atomic_write_json(p, res)
    return p


def test_over_training_says_when_every_model_is_at_the_baseline(tmp_path):
    fig = plots.over_training(_over_training_result(tmp_path), "04_soft_weight")
    cola, sst2 = fig.axes[:2]
    # at the baseline the panel says so, and still draws the scores (a reader checks the claim against them)
    assert "majority-class" in " ".join(t.get_text() for t in cola.texts)
    assert len([ln for ln in cola.lines if ln.get_label().startswith(("normal", "strong"))]) == 2
    runs = [ln for ln in sst2.lines if ln.get_label().startswith(("normal", "strong"))]
    assert len(runs) == 2 and not sst2.texts
    # the scores (54-57) approach the baseline (50): it is drawn, and the legend names it
    assert any(ln.get_label() == "majority-class baseline 50.0" and ln.get_ydata()[0] == 50.0 for ln in sst2.lines)
    # the title counts the resolved differences (the summary's comparisons): none here, the seeds overlap
    comps = results.over_training_comparisons(json.loads(_over_training_result(tmp_path).read_text()))
    assert [(c["a"], c["b"], c["fraction"]) for c in comps] == [("soft-strong", "soft-normal", 0.5),
                                                                ("soft-normal", "soft-strong", 1.0)]
    assert "0 of 2 differences resolved" in fig._suptitle.get_text()
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    top_of_panels = max(ax.title.get_window_extent(r).y1 for ax in (cola, sst2))
    assert fig._suptitle.get_window_extent(r).y0 >= top_of_panels          # the title clears the panel titles
    assert (tmp_path / "test" / "figures" / "04_soft_weight.png").exists()


def test_reproduce_turns_the_widgets_off(tmp_path, monkeypatch):
    import papermill as pm

    from dwt_lib import reproduce
    seen = []
    monkeypatch.setattr(pm, "execute_notebook", lambda nb, out, **kw: seen.append(kw["parameters"]))
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    assert reproduce.reproduce("smoke", only=["02"]) == 0
    assert seen == [{"profile": "smoke", "overrides": {}, "interactive": False}]
