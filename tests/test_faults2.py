"""Fault injection, round two (issue 21): each input a careful user tried, with the exact values listed there.

Each case ends in the same weights, a healed state, or one line ``dwt: ... (<where>); <fix>`` with exit code 2
before any training. Runs are the smoke profile's tiny student and 1-layer teacher for 4 steps (test_faults'
``FAULT`` settings), in this process; the relative-paths case runs ``dwt reproduce`` on notebook 02 (nothing to
train) as a subprocess, since the working directory of the kernel is the behaviour.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from dwt_lib.runs import checkpoints, integrity, registry as runs
from dwt_lib import cli, lab
from dwt_lib.train import pretrain as pt
from dwt_lib.models import losses
from dwt_lib.core.paths import pin_environment
from dwt_lib.reproduce import notebook_profile
from dwt_lib.studies.identity import ensure_finetuned, ensure_pretrained, named_run
from test_faults import (FAULT, _no_checkpoints, assert_heals_to, cfg_of, finished, one_line,  # noqa: F401
                         outputs, quiet, reference, reference_dir, same_weights, sets, shared_data_cache, weights)

REPO = Path(__file__).resolve().parent.parent


def dwt(capsys, *argv, bars: bool = False) -> str:
    """``dwt argv``: exit code 2 and exactly one ``dwt:`` line, which is returned. With ``bars`` a training
    progress bar may stand above it (closed first, so the line starts a line of its own)."""
    assert cli.main(list(argv)) == 2
    if not bars:
        return one_line(capsys)
    err = capsys.readouterr().err.replace("\r", "\n")
    lines = [ln for ln in err.splitlines() if ln.startswith("dwt:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def steps_counted(monkeypatch) -> dict:
    """Counts training steps (forward passes with gradients), to show that nothing was trained."""
    steps, real = {"n": 0}, losses.hard_loss

    def counting(logits, y, *a, **k):
        steps["n"] += logits.requires_grad
        return real(logits, y, *a, **k)

    monkeypatch.setattr(losses, "hard_loss", counting)
    return steps


# ----------------------------------------------------------------------------- 1. no diverged result recorded

def test_diverged_finetuning_stops_with_one_line_and_records_nothing(finished, capsys):
    line = dwt(capsys, "finetune", "--profile", "smoke", *sets(FAULT), "--run", "student", "--task", "mrpc",
               "--seed", "1", "--set", "finetune.lr=1e6")
    assert "fine-tuning mrpc seed 1: the loss is not finite (NaN or inf) at step" in line
    assert "nothing was recorded" in line and "finetune.lr" in line and "another run" in line
    assert "resumes from" not in line
    ft = [d for d in (finished / "smoke" / "runs").glob("finetune-*")]
    assert ft and not any((d / "result.json").exists() for d in ft)     # no 16.41 stored for the tables


@pytest.mark.parametrize("key", ["finetune.lr", "pretrain.lr"])
def test_nan_learning_rate_is_a_config_error(outputs, capsys, key):
    line = dwt(capsys, "pretrain", "--profile", "smoke", "--run", "student", "--set", f"{key}=.nan")
    assert f"{key}: expected a finite number, got nan" in line
    _no_checkpoints(outputs)


def test_nonfinite_pretraining_message_gives_true_advice(outputs, reference, monkeypatch, capsys):
    real = losses.hard_loss
    monkeypatch.setattr(losses, "hard_loss", lambda logits, y, *a, **k: real(logits, y, *a, **k) * float("nan"))
    cfg = cfg_of(**{"pretrain.precision": "bf16"})
    line = dwt(capsys, "pretrain", "--profile", "smoke", *sets({**FAULT, "pretrain.precision": "bf16"}),
               "--run", "student", bars=True)
    assert "the loss is not finite (NaN or inf) at step 1" in line and "nothing was recorded" in line
    assert "pretrain.lr" in line and "pretrain.precision=fp32" in line and "another run" in line
    assert "resumes from that checkpoint" not in line
    assert not named_run(cfg, "student").finished()
    line = dwt(capsys, "pretrain", "--profile", "smoke", *sets(FAULT), "--run", "student", bars=True)  # fp32
    assert "precision" not in line


# ----------------------------------------------------------------------------- 5. one line before any work

@pytest.mark.parametrize("argv, says", [
    (["--set", "pretrain.seed=-1"], "pretrain.seed: expected an integer seed in [0, 2^32), got -1"),
    (["--set", "pretrain.seed=4294967296"], "pretrain.seed: expected an integer seed in [0, 2^32), got 4294967296"),
    (["--set", "pretrain.epochs=.inf", "--set", "pretrain.max_steps=null"],
     "pretrain.epochs: expected a finite number, got inf"),
    (["--set", "finetune.seeds=[1, -5]"], "finetune.seeds[1]: expected an integer seed in [0, 2^32)"),
    (["--set", "pretrain.max_steps=100000000000000000000"], "pretrain.max_steps: expected an integer below 2^63"),
    (["--set", "profile=../../x"], "profile: expected a plain name"),
    (["--set", "distill.alpha_soft={kind: constant, value: .nan}"], "distill.alpha_soft.value: expected a finite"),
])
def test_bad_numbers_are_one_config_line(outputs, capsys, argv, says):
    line = dwt(capsys, "pretrain", "--profile", "smoke", "--run", "student", *argv)
    assert says in line and "(with overrides" in line
    _no_checkpoints(outputs)
    assert not (outputs.parent / "x").exists()


@pytest.mark.parametrize("argv, says", [
    (["finetune", "--run", "student", "--task", "mrpc", "--seed", "-5"], "--seed -5: expected a fine-tuning seed"),
    (["pretrain", "--run", "student:s²"], "unknown run name 'student:s²'"),
    (["pretrain", "--run", "student:s12345678901234567890"],
     "pre-training seed 12345678901234567890 in run name 'student:s12345678901234567890' is out of range"),
])
def test_bad_seeds_and_run_names_are_one_line(outputs, capsys, argv, says):
    line = dwt(capsys, argv[0], "--profile", "smoke", *argv[1:])
    assert says in line
    _no_checkpoints(outputs)


def test_batch_larger_than_the_data_is_one_line_before_training(outputs, monkeypatch, capsys):
    steps = steps_counted(monkeypatch)
    line = dwt(capsys, "pretrain", "--profile", "smoke", *sets(FAULT), "--run", "student",
               "--set", "pretrain.batch_size_per_device=100000", bars=True)
    assert "pretrain.batch_size_per_device: a global batch of 100000 sequences" in line
    assert "training blocks of this data" in line and "lower pretrain.batch_size_per_device" in line
    assert steps["n"] == 0
    _no_checkpoints(outputs)


def test_unwritable_cache_and_missing_data_folder_fail_in_the_preflight(outputs, monkeypatch, capsys):
    blocker = outputs / "a-file"
    blocker.write_text("a file where the cache folder should be")   # root ignores chmod; a file stops everyone
    monkeypatch.setenv("DWT_CACHE_DIR", str(blocker))
    line = dwt(capsys, "pretrain", "--profile", "smoke", *sets(FAULT), "--run", "student")
    assert "the data cache folder is not writable" in line and str(blocker) in line and "DWT_CACHE_DIR" in line
    monkeypatch.setenv("DWT_CACHE_DIR", str(outputs / "cache"))
    monkeypatch.setenv("DWT_DATA_DIR", str(outputs / "no-such-mirror"))
    line = dwt(capsys, "pretrain", "--profile", "smoke", *sets(FAULT), "--run", "student")
    assert "DWT_DATA_DIR is not a folder" in line and "no-such-mirror" in line
    _no_checkpoints(outputs)


def test_bad_profile_files_are_one_line(outputs, tmp_path, capsys):
    (tmp_path / "latin1.yaml").write_bytes("description: caf\xe9\n".encode("latin-1"))
    (tmp_path / "list.yaml").write_text("extends: [smoke]\n")
    (tmp_path / "five.yaml").write_text("extends: 5\n")
    cases = {str(tmp_path): "a directory, not a params file", "": "--profile is empty",
             str(tmp_path / "latin1.yaml"): "not UTF-8 text (at byte offset 16)",
             str(tmp_path / "list.yaml"): "extends: expected one profile name or path (e.g. 'extends: smoke'), got ['smoke']",
             str(tmp_path / "five.yaml"): "extends: expected one profile name or path (e.g. 'extends: smoke'), got 5",
             "/dev/zero": "/dev/zero: not a regular file"}
    for profile, says in cases.items():
        assert says in dwt(capsys, "plan", "--profile", profile), profile


def test_a_huge_profile_is_not_read_to_the_end(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(5 << 30)                      # 5 GB, sparse: reading it all would take the memory it did
    assert "larger than 1 MB, not a params file" in dwt(capsys, "plan", "--profile", str(big))


@pytest.mark.parametrize("argv, env, says", [
    (["--port", "70000"], {}, "dwt: --port '70000' is not a port (1-65535)"),
    (["--port", "0"], {}, "dwt: --port '0' is not a port (1-65535)"),
    ([], {"PORT": "abc"}, "dwt: PORT 'abc' is not a port (1-65535)"),
])
def test_lab_ports_are_checked(monkeypatch, capsys, argv, env, says):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(lab, "register_kernel", lambda: pytest.fail("got past the port check"))
    assert lab.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith(says), err


def test_make_lab_with_a_bad_port_is_one_line():
    out = subprocess.run(["make", "-s", "lab", "PORT=abc"], cwd=REPO, capture_output=True, text=True, timeout=120)
    dwt_lines = [ln for ln in out.stderr.splitlines() if ln.startswith("dwt:")]
    assert out.returncode != 0 and len(dwt_lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "'abc' is not a port" in dwt_lines[0]


def test_a_cut_short_log_is_named(finished, capsys):
    cfg = cfg_of()
    log = named_run(cfg, "student").dir / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    k = len(lines) // 2                          # cut inside line k+1 (half the text could end on a line break)
    log.write_text("".join(lines[:k]) + lines[k][: len(lines[k]) // 2])
    line = dwt(capsys, "runs", "--profile", "smoke", *sets(FAULT), "--plot", "student")
    assert str(log) in line and "is not a JSON object (cut short?)" in line
    from dwt_lib.studies import results
    with pytest.raises(runs.DamagedFileError, match="cut short") as e:
        results.read_log(cfg, "student")
    assert e.value.where == str(log)


# ----------------------------------------------------------------------------- 2. relative paths

def test_relative_paths_are_resolved_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DWT_OUTPUTS_DIR", "relout")
    monkeypatch.setenv("DWT_CACHE_DIR", "relcache")
    monkeypatch.setenv("DWT_DATA_DIR", "")             # empty: unset
    pinned = pin_environment()
    assert pinned == {"DWT_OUTPUTS_DIR": str(tmp_path / "relout"), "DWT_CACHE_DIR": str(tmp_path / "relcache")}
    assert os.environ["DWT_OUTPUTS_DIR"] == str(tmp_path / "relout")
    monkeypatch.chdir(REPO / "notebooks")              # where the kernel runs: the same folders
    assert runs.outputs_dir(cfg_of()) == tmp_path / "relout" / "smoke"
    (tmp_path / "params").mkdir()
    shutil.copy(REPO / "params" / "smoke.yaml", tmp_path / "params" / "mine.yaml")
    monkeypatch.chdir(tmp_path)
    assert notebook_profile("params/mine.yaml") == str(tmp_path / "params" / "mine.yaml")
    assert notebook_profile("smoke") == "smoke"


def test_reproduce_with_relative_profile_and_outputs(tmp_path):
    """The README's example from another directory: a relative profile and DWT_OUTPUTS_DIR; notebook 02 trains
    nothing. Everything lands under ./relout, nothing under notebooks/."""
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "mine.yaml").write_text("extends: smoke\n")
    env = dict(os.environ, DWT_OUTPUTS_DIR="relout", PYTHONPATH=str(REPO))
    env.pop("DWT_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-m", "dwt_lib.cli", "reproduce", "--profile", "params/mine.yaml",
                          "--notebooks", "02"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "relout" / "mine" / "notebooks" / "02_loss_derivation.ipynb").exists()
    assert list((tmp_path / "relout" / "mine" / "figures").glob("02_*.png"))
    assert not (REPO / "notebooks" / "relout").exists()
    assert f"figures in {tmp_path / 'relout' / 'mine' / 'figures'}" in out.stdout


# ----------------------------------------------------------------------------- 3. damaged weights

def test_damaged_teacher_weights_are_found_and_restored(finished, reference, monkeypatch, capsys):
    cfg = cfg_of()
    teacher = named_run(cfg, "teacher-weak")
    w = teacher.dir / "model" / "model.safetensors"
    w.write_bytes(os.urandom(w.stat().st_size))             # config.json kept, the weights random
    row = {r["name"]: r for r in runs.list_runs(cfg, checksums=True)}["teacher-weak"]
    assert row["status"].startswith("damaged: model/model.safetensors is damaged (sha256 differs"), row
    # the default listing hashes nothing (paper scale: tens of GB per call); random bytes fail the header check
    fast = {r["name"]: r for r in runs.list_runs(cfg)}["teacher-weak"]
    assert fast["status"] == "damaged: model/model.safetensors is damaged (its header does not read)", fast
    assert "damaged" in runs.format_runs([row])
    log = (teacher.dir / "log.jsonl").read_text()
    steps = steps_counted(monkeypatch)
    capsys.readouterr()
    ensure_pretrained(cfg, "dwt-weak", progress=False)     # the dependent run: no SafetensorError
    said = [ln for ln in capsys.readouterr().out.splitlines() if "teacher-weak" in ln and "damaged" in ln]
    assert len(said) == 1 and "finishing it again from its last checkpoint" in said[0], said
    assert same_weights(weights(teacher.dir / "model"), reference["teacher-weak"]["model"])
    assert (teacher.dir / "log.jsonl").read_text() == log                  # restored, not retrained
    assert integrity.problem(teacher.dir / "model") is None
    assert steps["n"] == 4                                                  # dwt-weak's own 4 steps only


def test_deleted_snapshot_weights_are_found_and_retrained(finished, reference):
    cfg = cfg_of()
    run = named_run(cfg, "student")
    (run.dir / "snapshots" / "frac-0.50" / "model.safetensors").unlink()
    row = {r["name"]: r for r in runs.list_runs(cfg)}["student"]
    assert row["status"] == "damaged: snapshots/frac-0.50/model.safetensors missing"
    ensure_finetuned(cfg, "student", "mrpc", 1, 0.5)       # no OSError: the snapshot is made again first
    assert same_weights(weights(run.dir / "snapshots" / "frac-0.50"), reference["student"]["half"])
    assert {r["name"]: r for r in runs.list_runs(cfg)}["student"]["status"] == "finished"


def test_deleted_snapshot_folder_is_listed_as_damaged(finished):
    cfg = cfg_of()
    shutil.rmtree(named_run(cfg, "student").dir / "snapshots" / "frac-0.50")
    row = {r["name"]: r for r in runs.list_runs(cfg)}["student"]
    assert row["status"] == "damaged: snapshots/frac-0.50/ missing"


# ----------------------------------------------------------------------------- 4. a wrong checkpoint manifest

def _two_checkpoints(folder: Path) -> None:
    for step in (1, 2):
        checkpoints.save(folder, {"step": step, "w": torch.full((100,), float(step))})


def test_manifest_with_wrong_checksums_keeps_the_checkpoints(tmp_path):
    folder = tmp_path / "ck"
    _two_checkpoints(folder)
    m = json.loads((folder / "manifest.json").read_text())
    for e in m["files"].values():
        e["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(m))
    said = []
    assert checkpoints.load(folder, log=said.append)["step"] == 2
    assert len(said) == 1 and "matches none of the checkpoints" in said[0]
    assert (folder / "last.pt").exists() and (folder / "prev.pt").exists()
    assert not list(folder.glob("*.damaged"))
    checkpoints.save(folder, {"step": 3})                   # the rewritten manifest vouches for the new prev.pt
    assert checkpoints.read_manifest(folder)["prev.pt"]["step"] == 2
    assert checkpoints.load(folder, log=quiet)["step"] == 3


@pytest.mark.parametrize("files", [{"last.pt": "abc", "prev.pt": "def"}, ["x"], {"last.pt": {"sha256": 5}}])
def test_malformed_manifest_entries_are_handled(tmp_path, files):
    folder = tmp_path / "ck"
    _two_checkpoints(folder)
    (folder / "manifest.json").write_text(json.dumps({"version": 1, "files": files}))
    said = []
    assert checkpoints.load(folder, log=said.append)["step"] == 2
    assert checkpoints.step_of(folder) in (None, 2)
    assert len(said) == 1 and "checking each checkpoint by loading it" in said[0]


# ----------------------------------------------------------------------------- 6. unclear or inconsistent

def test_a_waiting_process_says_for_what_and_since_when(outputs):
    run = named_run(cfg_of(), "student")
    said, spoke, entered = [], threading.Event(), threading.Event()
    with run.holding():
        holder = json.loads(Path(str(run.dir) + ".lock.json").read_text())
        assert holder["pid"] == os.getpid()

        def second():
            with run.holding(say=lambda s: (said.append(s), spoke.set())):
                entered.set()

        t = threading.Thread(target=second)
        t.start()
        assert spoke.wait(120)                             # events, not sleeps: the same on a loaded machine
        assert not entered.is_set()                        # it said so, and waits
    t.join(120)
    assert entered.is_set() and len(said) == 1
    assert f"waiting for run student ({run.id}): process {os.getpid()}" in said[0]
    assert f"has been working on it since {holder['since']}" in said[0] and "waiting since" in said[0]
    assert not Path(str(run.dir) + ".lock.json").exists()


def test_eval_batches_change_reevaluates_finished_runs(finished, reference, monkeypatch, capsys):
    assert reference["student"]["final_eval"]["eval_batches"] == 1
    steps = steps_counted(monkeypatch)
    capsys.readouterr()
    res = ensure_pretrained(cfg_of(**{"pretrain.eval_batches": 3}), "student", progress=False)
    assert steps["n"] == 0                                  # evaluated again from the final checkpoint only
    assert res["final_eval"]["eval_batches"] == 3 and res["final_eval"]["eval_blocks"] == 12
    assert reference["student"]["final_eval"]["eval_blocks"] == 4
    assert "measured on 1 batches and pretrain.eval_batches is now 3" in capsys.readouterr().out
    assert res["run"]["id"] == reference["student"]["id"]
    assert same_weights(weights(named_run(cfg_of(), "student").dir / "model"), reference["student"]["model"])


def test_provenance_says_which_machine(finished, reference):
    res = named_run(cfg_of(), "student").result()
    m = res["provenance"]["machine"]
    assert m["cpu"] and isinstance(m["isa"], list) and m["torch_threads"] == 1 and m["gpu_count"] >= 0


# ----------------------------------------------------------------------------- 8. dwt verify

def test_verify_retrains_the_cheapest_run_and_compares(finished, capsys):
    assert cli.main(["verify", "--profile", "smoke", *sets(FAULT), "--runs", "teacher-weak"]) == 0
    out = capsys.readouterr().out
    assert "retraining teacher-weak from scratch in" in out and "(same setup): identical" in out
    assert "torch threads" in out and "verify: all quantities agree" in out
    res_path = named_run(cfg_of(), "teacher-weak").result_path     # a recorded number that no rerun gives
    res = json.loads(res_path.read_text())
    res["final_eval"]["mlm_loss"] += 0.01
    res_path.write_text(json.dumps(res))
    assert cli.main(["verify", "--profile", "smoke", *sets(FAULT)]) == 1     # the cheapest: the 1-layer teacher
    out = capsys.readouterr().out
    assert "retraining teacher-weak" in out and "DIFFERS" in out and "a quantity differs" in out
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("dwt-verify-*/smoke/runs/teacher-weak*"))


def test_ctrl_c_during_reproduce_is_one_line_without_kernel_tracebacks(tmp_path):
    """One SIGINT once the first notebook's kernel runs (its log exists): exit 2, one ``dwt:`` line naming the
    notebook, and none of the kernel's ZMQError or asyncio's "Task exception was never retrieved" tracebacks."""
    import signal
    import time
    env = dict(os.environ, DWT_OUTPUTS_DIR=str(tmp_path), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dwt_lib.cli", "reproduce", "--profile", "smoke", "--notebooks",
                             "02,03"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not list(tmp_path.glob("smoke/runs/.kernels/*.log")):
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()
        time.sleep(0.1)
    time.sleep(2)                                   # into its cells; notebooks 02 and 03 take far longer
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("dwt:")]
    assert proc.returncode == 2 and len(lines) == 1, err
    assert "Traceback" not in err and "ZMQError" not in err and "Kernel died" not in err, err
    assert "dwt: interrupted in 0" in lines[0] and "rerun the same command" in lines[0]
