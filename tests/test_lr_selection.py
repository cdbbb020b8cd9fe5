"""finetune.lr_grid: per-task learning rates chosen on the standalone student only (issue 10)."""
import pytest

from dwt_lib.studies import identity as studies
from dwt_lib.core.errors import ConfigError
from dwt_lib.config.load import load_params
from dwt_lib.config.tasks import task_settings
from dwt_lib.studies.identity import finetune_run


def _fake_scores(monkeypatch, table):
    """ensure_finetuned -> score from ``table[(task, lr)]``; records every call."""
    calls = []

    def fake(cfg, name, task, seed, fraction=1.0, progress=False):
        lr = task_settings(cfg.finetune, task)["lr"]
        calls.append((name, task, seed, fraction, lr))
        return {"score": table[(task, lr)]}

    monkeypatch.setattr(studies, "ensure_finetuned", fake)
    return calls


def test_grid_picks_the_students_best_lr_per_task(monkeypatch):
    cfg = load_params("smoke", {"finetune.lr_grid": [1e-4, 2e-4, 4e-4], "finetune.seeds": [7, 8],
                                "finetune.lr_per_task": {"mrpc": 3e-5}})
    calls = _fake_scores(monkeypatch, {("sst2", 1e-4): 70.0, ("sst2", 2e-4): 75.0, ("sst2", 4e-4): 72.0,
                                       ("cola", 1e-4): 10.0, ("cola", 2e-4): 10.0, ("cola", 4e-4): 5.0})
    sel = studies.selected_lrs(cfg, ["sst2", "cola", "mrpc"])
    assert sel["sst2"]["lr"] == 2e-4
    assert sel["cola"]["lr"] == 1e-4                       # a tie goes to the earlier grid entry
    assert "mrpc" not in sel                               # fixed in lr_per_task: not searched
    assert sel["sst2"]["scores"] == {"0.0001": 70.0, "0.0002": 75.0, "0.0004": 72.0}
    # only the standalone student, end of pre-training, first fine-tuning seed
    assert {(c[0], c[2], c[3]) for c in calls} == {("student", 7, 1.0)}
    assert len(calls) == 6
    out = studies.with_selected_lrs(cfg, ["sst2", "cola", "mrpc"])
    assert out.finetune.lr_per_task == {"mrpc": 3e-5, "sst2": 2e-4, "cola": 1e-4}


def test_no_grid_changes_nothing(monkeypatch):
    cfg = load_params("smoke")
    calls = _fake_scores(monkeypatch, {})
    assert studies.selected_lrs(cfg, ["sst2"]) == {}
    assert studies.with_selected_lrs(cfg, ["sst2"]) is cfg
    assert calls == []


def test_the_chosen_grid_run_is_the_students_own_run():
    """The selection's run at the chosen lr and the study's run of the student are one registry run,
    and the grid itself is not part of any run's identity."""
    base = load_params("smoke", {"finetune.lr_per_task": {"sst2": 2e-4}})
    grid = load_params("smoke", {"finetune.lr_per_task": {"sst2": 2e-4}, "finetune.lr_grid": [1e-4, 2e-4]})
    assert finetune_run(base, "student", "sst2", 1).id == finetune_run(grid, "student", "sst2", 1).id


def test_bad_grid_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"finetune\.lr_grid.*positive"):
        load_params("smoke", {"finetune.lr_grid": [1e-4, -1]})


def test_plan_counts_the_grid_runs():
    from dwt_lib.studies.plan import finetune_jobs
    cfg = load_params("smoke")
    n = len(finetune_jobs(cfg))
    grid = cfg.replace(**{"finetune.lr_grid": [1e-4, 2e-4, 4e-4]})
    tasks = [t for t in cfg.finetune.tasks if t not in cfg.finetune.lr_per_task]
    assert len(finetune_jobs(grid)) == n + 2 * len(tasks)
