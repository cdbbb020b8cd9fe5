"""The run registry: atomic writes, ensure (reuse, lock, result provenance), list_runs, ``dwt runs``."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from dwt_lib import cli
from dwt_lib.runs import registry as runs
from dwt_lib.config.load import load_params
from dwt_lib.runs.registry import Run, ensure, format_runs, list_runs
from dwt_lib.core.io import atomic_write_json


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    return load_params("smoke")


def make_run(cfg, name="student", kind="student", **key) -> Run:
    return Run(kind=kind, name=name, key={"x": name, **key}, root=runs.outputs_dir(cfg))


def test_outputs_dir_honours_env(cfg, tmp_path):
    assert runs.outputs_dir(cfg) == tmp_path / "smoke"


def test_atomic_write_json_leaves_no_temp_files(tmp_path, monkeypatch):
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(p, {"b": 1, "a": [1, 2]})
    atomic_write_json(p, {"b": 2})                      # overwrite
    assert json.loads(p.read_text()) == {"b": 2}
    assert sorted(os.listdir(p.parent)) == ["a.json"]

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", fail)      # a failure mid-write: old file intact, no temp
    with pytest.raises(OSError):
        atomic_write_json(p, {"b": 3})
    assert json.loads(p.read_text()) == {"b": 2}
    assert sorted(os.listdir(p.parent)) == ["a.json"]


def test_run_id_is_hash_of_key_not_name(cfg):
    a = make_run(cfg, "a", x="same")
    b = Run(kind="student", name="b", key={"x": "same"}, root=a.root)
    assert a.id == b.id and a.id.startswith("student-")
    assert make_run(cfg, "a", x="other").id != a.id


def test_ensure_trains_once_then_reuses(cfg, capsys):
    run = make_run(cfg)
    calls = []

    def train(r):
        calls.append(r.id)
        return {"final_eval": {"mlm_loss": 1.0}}

    res = ensure(run, cfg, train)
    assert calls == [run.id] and res["final_eval"] == {"mlm_loss": 1.0}
    assert res["run"]["id"] == run.id and res["provenance"]["config_hash"] == cfg.short_hash()
    assert res["provenance"]["wall_time_s"] >= 0 and "torch" in res["provenance"]["versions"]
    assert json.loads((run.dir / "run.json").read_text())["name"] == "student"
    mtime = run.result_path.stat().st_mtime_ns
    assert f"[dwt] starting student ({run.id})" in capsys.readouterr().out
    assert ensure(run, cfg, train) == res
    assert calls == [run.id] and run.result_path.stat().st_mtime_ns == mtime
    assert "[dwt]" not in capsys.readouterr().out


def test_ensure_failure_writes_no_result(cfg):
    run = make_run(cfg)

    def train(r):
        (r.dir / "checkpoints").mkdir()
        raise FloatingPointError("nan")

    with pytest.raises(FloatingPointError):
        ensure(run, cfg, train)
    assert not run.finished()
    lines = []
    ensure(run, cfg, lambda r: {"ok": True}, log=lines.append)
    assert lines == [f"[dwt] resuming student ({run.id})"]          # the lock was released


def test_ensure_lock_second_caller_waits_and_reads(cfg):
    """Two threads (separate FileLock objects, like two processes) ask for one run: one trains."""
    run = make_run(cfg)
    calls, results = [], []
    started = threading.Event()

    def train(r):
        calls.append(1)
        started.set()
        time.sleep(0.5)
        return {"v": len(calls)}

    def ask():
        r = Run(kind=run.kind, name=run.name, key=dict(run.key), root=run.root)
        results.append(ensure(r, cfg, train, log=lambda s: None))

    t1 = threading.Thread(target=ask)
    t1.start()
    started.wait(10)
    t2 = threading.Thread(target=ask)
    t2.start()
    t1.join(20)
    t2.join(20)
    assert calls == [1] and len(results) == 2 and results[0] == results[1]


def _fake_runs(cfg):
    """A finished, a partial and a new run folder, plus a lock file and a stray folder."""
    fin, part, new = make_run(cfg, "teacher-weak", "teacher"), make_run(cfg, "dwt-weak", "dwt"), make_run(cfg)
    ensure(fin, cfg, lambda r: {"ok": 1}, log=lambda s: None)
    (fin.dir / "model").mkdir()                         # a finished pre-training run has its model
    (fin.dir / "model" / "config.json").write_text("{}")
    for r in (part, new):
        r.dir.mkdir(parents=True)
        atomic_write_json(r.dir / "run.json", {"kind": r.kind, "name": r.name, "id": r.id, "key": r.key})
    (part.dir.parent / (part.id + ".lock")).touch()     # a lock file is not a run folder
    atomic_write_json(part.dir / "progress.json", {"step": 3, "total_steps": 12, "elapsed_s": 7.5})
    (fin.root / "runs" / "junk-folder").mkdir()         # no run.json: not a run
    return fin, part, new


def test_list_runs_status_and_progress(cfg):
    fin, part, new = _fake_runs(cfg)
    rows = {r["id"]: r for r in list_runs(cfg)}
    assert set(rows) == {fin.id, part.id, new.id}
    assert rows[fin.id]["status"] == "finished" and rows[fin.id]["progress"] == 1.0
    assert rows[fin.id]["wall_time_s"] is not None and rows[fin.id]["name"] == "teacher-weak"
    assert rows[part.id]["status"] == "partial" and rows[part.id]["progress"] == pytest.approx(0.25)
    assert rows[part.id]["wall_time_s"] == 7.5
    assert rows[new.id]["status"] == "new" and rows[new.id]["progress"] == 0.0
    table = format_runs(list_runs(cfg))
    assert "25%" in table and "100%" in table and "8s" in table


def test_dwt_runs_cli_prints_table(cfg, capsys):
    assert cli.main(["runs", "--profile", "smoke"]) == 0
    assert capsys.readouterr().out.strip() == "(no runs)"
    fin, part, new = _fake_runs(cfg)
    assert cli.main(["runs", "--profile", "smoke"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["id", "name", "status", "progress", "wall"]
    body = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert body[fin.id][1:4] == ["teacher-weak", "finished", "100%"]
    assert body[part.id][1:5] == ["dwt-weak", "partial", "25%", "8s"]
    assert body[new.id][1:5] == ["student", "new", "0%", "-"]


def test_git_commit_is_dirty_for_code_not_for_outputs():
    """A changed committed output (a reproduce rewrites them) is not dirty; a changed source file is."""
    import shutil
    import subprocess
    from dwt_lib.runs import registry as runs
    if shutil.which("git") is None or not (runs.REPO / ".git").exists():
        pytest.skip("not a git checkout")
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=runs.REPO,
                      capture_output=True, text=True).stdout.strip():
        pytest.skip("the checkout already has uncommitted changes")
    readme = runs.REPO / "outputs" / "mini" / "results"
    target = next(readme.glob("*.json"))
    code = runs.REPO / "dwt_lib" / "config" / "schedules.py"
    old_t, old_c = target.read_bytes(), code.read_bytes()
    try:
        target.write_bytes(old_t + b"\n")
        assert not runs.git_commit().endswith("+dirty")
        code.write_bytes(old_c + b"\n")
        assert runs.git_commit().endswith("+dirty")
    finally:
        target.write_bytes(old_t)
        code.write_bytes(old_c)
