"""Fault injection: damaged checkpoints and JSON files, a deleted model, a full disk, Ctrl-C, late checks.

Each case is reproduced and either heals (the same weights and metrics as an undamaged run) or
fails with one line ``dwt: ... (<file / key / id>); <fix>`` and exit code 2. Runs are the smoke
profile's tiny student and 1-layer teacher for 6 steps, in this process; only the Ctrl-C case
starts the CLI as a subprocess (the signal and what the terminal shows are the behaviour).
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dwt_lib.runs import checkpoints, registry as runs
from dwt_lib import cli
from dwt_lib.core import errors
from dwt_lib.studies import preflight
from dwt_lib.train import pretrain as pt
from dwt_lib.models import losses
from dwt_lib.config.load import load_params
from dwt_lib.studies.identity import ensure_pretrained, named_run
from helpers import interrupt_at

REPO = Path(__file__).resolve().parent.parent

# 4 steps of 4 sequences, a checkpoint every step, snapshots at steps 2 and 4; one thread (the
# tiny models gain nothing from more, and CI machines are shared).
FAULT = {
    "pretrain.max_steps": 4, "pretrain.batch_size_per_device": 4, "pretrain.eval_batches": 1,
    "pretrain.log_every": 1, "pretrain.eval_every": 2, "pretrain.checkpoint_every": 1,
    "pretrain.snapshot_fractions": [0.5, 1.0], "pretrain.precision": "fp32",
    "model.teachers.weak": "tiny-teacher-1l", "launch.num_threads": 1,
}
# Other bookkeeping frequencies: not part of the run's identity, and they do not change the weights.
OTHER_FREQ = {"pretrain.log_every": 2, "pretrain.eval_every": 3, "pretrain.eval_batches": 2,
              "pretrain.checkpoint_every": 3, "pretrain.num_workers": 1}


def cfg_of(**extra):
    return load_params("smoke", {**FAULT, **extra})


def weights(model_dir: Path) -> dict:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def quiet(s: str) -> None:
    pass


@pytest.fixture(scope="module", autouse=True)
def shared_data_cache(tmp_path_factory):
    """One processed-data cache for the module (it would otherwise follow each test's outputs folder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWT_CACHE_DIR", str(tmp_path_factory.mktemp("data-cache")))
        yield


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def reference(reference_dir):
    """The undamaged, uninterrupted runs every healed run is compared with."""
    out = reference_dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWT_OUTPUTS_DIR", str(out))
        cfg = cfg_of()
        res = {n: ensure_pretrained(cfg, n, progress=False) for n in ("student", "teacher-weak")}
        return {n: {"final_eval": res[n]["final_eval"], "id": res[n]["run"]["id"],
                    "model": weights(named_run(cfg, n).dir / "model"),
                    "half": weights(named_run(cfg, n).dir / "snapshots" / "frac-0.50")} for n in res}


@pytest.fixture
def finished(outputs, reference, reference_dir):
    """A copy of the reference runs (finished student and weak teacher) to damage."""
    import shutil
    shutil.copytree(reference_dir / "smoke", outputs / "smoke")
    return outputs


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    return tmp_path


def assert_heals_to(cfg, name: str, reference: dict) -> dict:
    res = ensure_pretrained(cfg, name, progress=False)
    assert res["final_eval"] == reference[name]["final_eval"]
    assert same_weights(weights(named_run(cfg, name).dir / "model"), reference[name]["model"])
    return res


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("dwt: ") and "Traceback" not in err[0]
    return err[0]


# ----------------------------------------------------------------------------- identity

def test_bookkeeping_frequencies_are_not_identity_and_do_not_change_weights(outputs, reference, monkeypatch):
    """Killed (Ctrl-C) at step 4 with one set of log/eval/checkpoint frequencies, resumed with
    another: the same run, and bit-identical weights to the reference run that used a third set
    and was never interrupted (eval and checkpoints do not consume the training RNG; dropout is on)."""
    cfg = cfg_of(**OTHER_FREQ)
    assert cfg.model.hidden_dropout_prob > 0
    assert named_run(cfg, "student").id == reference["student"]["id"]
    interrupt_at(monkeypatch, 4)
    with pytest.raises(errors.Interrupted) as e:
        ensure_pretrained(cfg, "student", progress=False)
    assert "resume from its checkpoint of step 3" in e.value.message and "at step 2 of 4" in e.value.message
    monkeypatch.undo()
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(outputs))
    res = assert_heals_to(cfg_of(**{"pretrain.log_every": 2}), "student", reference)
    assert res["run"]["id"] == reference["student"]["id"]
    assert same_weights(weights(named_run(cfg, "student").dir / "snapshots" / "frac-0.50"),
                        reference["student"]["half"])


def test_atomic_files_get_the_usual_mode(tmp_path):
    runs.atomic_write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.txt").write_text("plain open()")
    checkpoints.save(tmp_path / "ck", {"step": 1})
    want = stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)
    for p in (tmp_path / "a.json", tmp_path / "ck" / "last.pt", tmp_path / "ck" / "manifest.json"):
        assert stat.S_IMODE(p.stat().st_mode) == want, p


# ----------------------------------------------------------------------------- checkpoints

def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:                                   # 1,000 random bytes inside the tensor data
        rnd = random.Random(0).randbytes(1000)
        mid = len(data) // 2
        path.write_bytes(data[:mid] + rnd + data[mid + 1000:])


def test_checkpoint_rotation_and_manifest(tmp_path):
    folder = tmp_path / "ck"
    for step in (1, 2, 3):
        checkpoints.save(folder, {"step": step, "w": torch.full((10,), float(step))})
    m = checkpoints.read_manifest(folder)
    assert {k: v["step"] for k, v in m.items()} == {"last.pt": 3, "prev.pt": 2}
    for name in ("last.pt", "prev.pt"):
        assert checkpoints.sha256_file(folder / name) == m[name]["sha256"]
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "manifest.json", "prev.pt"]
    assert checkpoints.load(folder, log=quiet)["step"] == 3


@pytest.mark.parametrize("how", ["truncated", "empty", "random bytes inside"])
def test_damaged_last_checkpoint_falls_back_to_previous(tmp_path, how):
    folder = tmp_path / "ck"
    for step in (1, 2):
        checkpoints.save(folder, {"step": step, "w": torch.arange(50_000, dtype=torch.float32) * step})
    _damage(folder / "last.pt", how)
    if how == "random bytes inside":        # what made this dangerous: torch loads it without a word
        assert torch.load(folder / "last.pt", weights_only=False)["step"] == 2
    said = []
    st = checkpoints.load(folder, log=said.append)
    assert st["step"] == 1 and torch.equal(st["w"], torch.arange(50_000, dtype=torch.float32))
    assert len(said) == 1 and str(folder / "last.pt") in said[0] and str(folder / "prev.pt") in said[0]
    assert {"truncated": "truncated", "empty": "empty file", "random bytes inside": "sha256"}[how] in said[0]
    assert (folder / "last.pt.damaged").exists() and not (folder / "last.pt").exists()
    checkpoints.save(folder, {"step": 2})   # the damaged file is never rotated into prev.pt
    assert checkpoints.load(folder, log=quiet)["step"] == 2
    assert checkpoints.read_manifest(folder)["prev.pt"]["step"] == 1


def test_damaged_checkpoint_and_progress_in_a_run_heal_to_the_same_result(outputs, reference, monkeypatch,
                                                                          capsys):
    cfg = cfg_of()
    interrupt_at(monkeypatch, 4)                        # checkpoints at steps 2 (prev.pt) and 3 (last.pt)
    with pytest.raises(errors.Interrupted):
        ensure_pretrained(cfg, "student", progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(outputs))
    run = named_run(cfg, "student")
    ck = run.dir / "checkpoints"
    _damage(ck / "last.pt", "random bytes inside")
    (run.dir / "progress.json").write_text('{"step": 3, "tot')
    (row,) = runs.list_runs(cfg)
    assert row["status"].startswith("damaged: progress.json not valid JSON")
    capsys.readouterr()
    assert_heals_to(cfg, "student", reference)
    out = capsys.readouterr().out
    assert f"{ck / 'last.pt'} is damaged" in out and f"resuming from {ck / 'prev.pt'} (step 2)" in out
    assert f"{run.dir / 'progress.json'} is damaged" in out


def test_disk_full_while_checkpointing_leaves_nothing_partial(outputs, reference, monkeypatch, capsys):
    cfg = cfg_of()
    real, calls = checkpoints.write_file, {"n": 0}

    def full(path, data):
        calls["n"] += 1
        if calls["n"] == 3:                 # the third checkpoint (step 3): half written, then ENOSPC
            Path(path).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(checkpoints, "write_file", full)
    with pytest.raises(errors.DiskFullError) as e:
        ensure_pretrained(cfg, "student", progress=False)
    ck = named_run(cfg, "student").dir / "checkpoints"
    assert not (ck / "last.tmp").exists()
    assert checkpoints.load(ck, log=quiet)["step"] == 2
    assert checkpoints.read_manifest(ck)["last.pt"]["step"] == 2
    assert errors.report(e.value) == 2
    line = one_line(capsys)
    assert "disk full" in line and str(ck / "last.tmp") in line and "resumes" in line
    monkeypatch.setattr(checkpoints, "write_file", real)
    assert_heals_to(cfg, "student", reference)


# ----------------------------------------------------------------------------- registry

@pytest.mark.parametrize("damage", ["truncated", "{}"])
def test_damaged_result_is_recomputed_from_the_checkpoint(finished, reference, monkeypatch, damage, capsys):
    cfg = cfg_of()
    run = named_run(cfg, "student")
    text = run.result_path.read_text()
    run.result_path.write_text(text[: len(text) // 3] if damage == "truncated" else "{}")
    row = {r["name"]: r for r in runs.list_runs(cfg)}["student"]
    assert row["status"].startswith("damaged: result.json ")
    assert "damaged: result.json" in runs.format_runs([row])
    steps = {"n": 0}
    real = losses.hard_loss

    def counting(logits, y, *a, **k):
        steps["n"] += logits.requires_grad
        return real(logits, y, *a, **k)

    monkeypatch.setattr(losses, "hard_loss", counting)
    capsys.readouterr()
    assert_heals_to(cfg, "student", reference)
    assert steps["n"] == 0                              # nothing retrained: finished from the final checkpoint
    assert f"{run.result_path} is damaged" in capsys.readouterr().out
    assert (run.dir / "result.json.damaged").exists()
    assert {r["name"]: r for r in runs.list_runs(cfg)}["student"]["status"] == "finished"


def test_dwt_runs_lists_a_damaged_run_and_the_rest(outputs, capsys):
    cfg = cfg_of()
    good, bad, part = (named_run(cfg, n) for n in ("teacher-weak", "student", "dwt-weak"))
    for r in (good, bad, part):
        r.dir.mkdir(parents=True)
        runs.atomic_write_json(r.dir / "run.json", {"kind": r.kind, "name": r.name, "id": r.id})
    runs.write_result(good.result_path, cfg, {"run": {}, "final_eval": {}})
    (good.dir / "model").mkdir()
    (good.dir / "model" / "config.json").write_text("{}")
    bad.result_path.write_text('{"run": {"kind": "stud')
    (part.dir / "progress.json").write_text("")
    assert cli.main(["runs", "--profile", "smoke"]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert "finished" in rows[good.id]
    assert "damaged: result.json not valid JSON" in rows[bad.id]
    assert "damaged: progress.json empty file" in rows[part.id]


def test_deleted_teacher_model_is_restored_or_retrained(finished, reference):
    """A finished teacher whose model/ is gone: the DWT run restores it from the teacher's final
    checkpoint; with the checkpoints gone too, the teacher is trained again (the same weights)."""
    import shutil
    cfg = cfg_of()
    teacher = named_run(cfg, "teacher-weak")
    log = (teacher.dir / "log.jsonl").read_text()
    shutil.rmtree(teacher.dir / "model")
    assert {r["name"]: r for r in runs.list_runs(cfg)}["teacher-weak"]["status"] == "damaged: model/ missing"
    ensure_pretrained(cfg, "dwt-weak", progress=False)
    assert same_weights(weights(teacher.dir / "model"), reference["teacher-weak"]["model"])
    assert (teacher.dir / "log.jsonl").read_text() == log             # restored, not retrained
    for p in ("model", "checkpoints", "snapshots"):
        shutil.rmtree(teacher.dir / p)
    assert_heals_to(cfg, "teacher-weak", reference)


def test_missing_snapshot_retrains_from_the_start(finished, reference):
    import shutil
    cfg = cfg_of()
    run = named_run(cfg, "student")
    shutil.rmtree(run.dir / "snapshots" / "frac-0.50")
    assert_heals_to(cfg, "student", reference)
    assert same_weights(weights(run.dir / "snapshots" / "frac-0.50"), reference["student"]["half"])


# ----------------------------------------------------------------------------- checks before work

def _no_checkpoints(outputs: Path) -> None:
    assert not list(outputs.glob("**/checkpoints/*")), "a run trained before the check"


def test_unavailable_glue_task_stops_study_before_pretraining(outputs, capsys):
    code = cli.main(["study", "--profile", "smoke", *sets(FAULT), "--set", "finetune.tasks=[sst2, mnli]",
                     "teacher_quality"])
    assert code == 2
    line = one_line(capsys)
    assert "GLUE mnli split 'train' is not" in line and "finetune.tasks" in line
    _no_checkpoints(outputs)


def test_unknown_task_fraction_and_run_fail_at_once(outputs, capsys):
    base = ["finetune", "--profile", "smoke", *sets(FAULT)]
    assert cli.main([*base, "--run", "student", "--task", "nosuchtask"]) == 2
    assert "unknown GLUE task 'nosuchtask'" in one_line(capsys)
    assert cli.main([*base, "--run", "student", "--task", "sst2", "--fraction", "0.3"]) == 2
    assert "no snapshot at fraction 0.30" in one_line(capsys)
    assert cli.main(["pretrain", "--profile", "smoke", "--run", "dwt-strongest"]) == 2
    line = one_line(capsys)
    assert "unknown run name 'dwt-strongest'" in line and "(--run)" in line and "known: teacher-weak" in line
    _no_checkpoints(outputs)


def test_no_disk_room_or_unwritable_outputs_fail_before_training(outputs, monkeypatch, capsys):
    import collections
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    assert cli.main(["pretrain", "--profile", "smoke", *sets(FAULT), "--run", "dwt-weak"]) == 2
    line = one_line(capsys)
    assert "not enough disk for the checkpoints of 2 run(s)" in line and "dwt plan" in line
    monkeypatch.undo()
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(outputs / "not-a-folder"))
    (outputs / "not-a-folder").write_text("a file where the outputs folder should be")
    assert cli.main(["pretrain", "--profile", "smoke", *sets(FAULT), "--run", "student"]) == 2
    assert "outputs folder is not writable" in one_line(capsys)
    _no_checkpoints(outputs)


# ----------------------------------------------------------------------------- one line per error

def sets(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def test_config_errors_are_one_line(outputs, tmp_path, capsys):
    assert cli.main(["plan", "--profile", "smoke", "--set", "pretrain.snapshot_fractions=[0.5, 1.0"]) == 2
    line = one_line(capsys)
    assert "--set pretrain.snapshot_fractions=[0.5, 1.0: the value is not valid YAML" in line
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert cli.main(["plan", "--profile", str(empty)]) == 2
    assert f"{empty}: empty file" in one_line(capsys)


def test_permission_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    e = PermissionError(errno.EACCES, "Permission denied", "/some/outputs/smoke/runs")
    assert errors.report(e) == 2
    assert one_line(capsys) == ("dwt: permission denied (/some/outputs/smoke/runs); make the folder writable "
                                "or set DWT_OUTPUTS_DIR to a folder you can write")
    monkeypatch.setenv("DWT_DEBUG", "1")
    assert cli.main(["pretrain", "--profile", "smoke", "--run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("dwt: unknown run name")
    with pytest.raises(ZeroDivisionError):      # a bug is not an expected error: it keeps its traceback
        errors.report(ZeroDivisionError("x"))


def test_ctrl_c_prints_one_line_with_the_step(tmp_path):
    """SIGINT to ``dwt pretrain`` after its first checkpoint: exit code 2 and one ``dwt:`` line
    saying the step and how to resume, no traceback (it was ~110 lines)."""
    env = dict(os.environ, DWT_OUTPUTS_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    over = {**FAULT, "pretrain.max_steps": 4000, "pretrain.checkpoint_every": 2}
    proc = subprocess.Popen([sys.executable, "-m", "dwt_lib.cli", "pretrain", "--profile", "smoke", "--run",
                             "student", *sets(over)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # pytest started in the background (nohup ... &) has SIGINT ignored, and an ignored
                            # signal stays ignored across exec (Python then installs no KeyboardInterrupt handler)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not list(tmp_path.glob("smoke/runs/student-*/progress.json")):      # written after a checkpoint
        assert proc.poll() is None and time.time() - t0 < 480, proc.communicate()
        time.sleep(0.05)
    # Pressed once, then the line awaited however long a loaded machine takes to shut down (a second press
    # while it was shutting down killed it: rc -2). Pressed again only if no line came at all, as a user would.
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("dwt:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted at step" in lines[0] and "of 4000 in run student" in lines[0]
    assert "rerun the same command to resume from its checkpoint of step" in lines[0]
