"""The pre-training loop end to end on the smoke corpora: resume after SIGKILL, 2 processes,
NaN stop, DWT lowers the held-out loss, frozen teacher, a_s schedule in the log, run reuse,
run lock, teacher checks, remap init.

Every test writes under a tmp ``DWT_OUTPUTS_DIR``; the data cache (``outputs/.cache``) is shared.
Models are tiny and runs take a handful of steps. Tests that start ``python -m dwt_lib.cli``
subprocesses pay ~5-10 s of imports each.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional
import warnings
from pathlib import Path

import pytest
import torch

from dwt_lib.train import pretrain as pt
from dwt_lib.models import losses
from dwt_lib.train import init
from dwt_lib.runs import checkpoints, registry as runs
from dwt_lib.config.load import load_params
from dwt_lib.models.encoder import SparseMLM, build_model, count_parameters
from dwt_lib.config.schedules import make_schedule
from dwt_lib.studies.identity import ensure_pretrained, named_run, pretrain_run

REPO = Path(__file__).resolve().parent.parent

# Small and fast: 6 steps of 4 sequences, a log line every step. The weak teacher is the
# 1-layer size so DWT runs cost little more than the student alone.
BASE = {
    "pretrain.max_steps": 6, "pretrain.batch_size_per_device": 4, "pretrain.eval_batches": 1,
    "pretrain.log_every": 1, "pretrain.eval_every": 3, "pretrain.checkpoint_every": 3,
    "pretrain.snapshot_fractions": [1.0], "pretrain.precision": "fp32",
    "model.teachers.weak": "tiny-teacher-1l",
}


def cfg_of(**extra):
    return load_params("smoke", {**BASE, **extra})


def read_log(run) -> list[dict]:
    return [json.loads(ln) for ln in (run.dir / "log.jsonl").read_text().splitlines() if ln]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def set_args(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={json.dumps(v)}"]      # JSON is YAML: the CLI parses it back exactly
    return out


def cli_env(outputs: Path) -> dict:
    env = dict(os.environ, DWT_OUTPUTS_DIR=str(outputs), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# `dwt` with checkpoints.save wrapped: after the checkpoint of step `pause_at` is written the process
# touches <outputs>/paused and sleeps, so a test kills it at a known point however loaded the machine is.
PAUSING_CLI = """import os, runpy, sys, time
from dwt_lib.runs import checkpoints
save, at = checkpoints.save, int(os.environ["DWT_TEST_PAUSE_AT"])
def pausing(folder, state):
    path = save(folder, state)
    if state["step"] >= at:
        open(os.path.join(os.environ["DWT_OUTPUTS_DIR"], "paused"), "w").close()
        time.sleep(3600)
    return path
checkpoints.save = pausing
runpy.run_module("dwt_lib.cli", run_name="__main__", alter_sys=True)
"""


def start_cli(outputs: Path, run: str, overrides: dict, log_to: Path,
              pause_at: Optional[int] = None) -> subprocess.Popen:
    args = ["pretrain", "--profile", "smoke", "--run", run, *set_args(overrides)]
    env = cli_env(outputs)
    if pause_at is None:
        cmd = [sys.executable, "-m", "dwt_lib.cli", *args]
    else:
        outputs.mkdir(parents=True, exist_ok=True)
        cmd, env["DWT_TEST_PAUSE_AT"] = [sys.executable, "-c", PAUSING_CLI, *args], str(pause_at)
    f = open(log_to, "w")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def shared_outputs(tmp_path_factory):
    """One outputs dir for the tests that share the weak teacher and its DWT runs."""
    return tmp_path_factory.mktemp("shared-outputs")


@pytest.fixture
def shared(shared_outputs, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(shared_outputs))
    return cfg_of()


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------- DWT with a shared teacher

def test_teacher_weights_bit_identical_after_dwt(shared):
    ensure_pretrained(shared, "teacher-weak", progress=False)
    teacher = named_run(shared, "teacher-weak")
    files = sorted((teacher.dir / "model").glob("*.safetensors"))
    assert files
    before = {f.name: sha256(f) for f in files}
    sd_before = {k: v.clone() for k, v in
                 __import__("transformers").BertForMaskedLM.from_pretrained(teacher.dir / "model").state_dict().items()}
    res = ensure_pretrained(shared, "dwt-weak", progress=False)
    assert res["teacher_params"] and res["teacher_params"] < res["params"]
    assert {f.name: sha256(f) for f in sorted((teacher.dir / "model").glob("*.safetensors"))} == before
    sd_after = __import__("transformers").BertForMaskedLM.from_pretrained(teacher.dir / "model").state_dict()
    assert all(torch.equal(sd_before[k], sd_after[k]) for k in sd_before)
    log = read_log(named_run(shared, "dwt-weak"))
    assert all(rec["soft"] > 0 for rec in log)          # the teacher was used


def test_soft_weight_schedule_in_log(shared):
    """Line ``step: k`` records a_s(k - 1, total): the value used by the k-th optimizer step."""
    res = ensure_pretrained(shared, "soft-decay", progress=False)
    spec = dict(shared.studies.soft_weight["decay"])
    assert spec == {"kind": "linear", "start": 4.0, "end": 1.0}
    f, total = make_schedule(spec), res["steps"]
    log = read_log(named_run(shared, "soft-decay"))
    assert [r["step"] for r in log] == list(range(1, total + 1))
    for rec in log:
        assert rec["alpha_soft"] == pytest.approx(f(rec["step"] - 1, total), abs=1e-12), rec
    assert log[0]["alpha_soft"] == 4.0


def test_remap_init_copies_teacher(shared, monkeypatch):
    import dwt_lib.models.remap as remap
    seen = {}
    real = remap.remap_parameters

    def spy(teacher, student):
        report = real(teacher, student)
        seen["teacher"] = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
        seen["student"] = {k: v.detach().clone() for k, v in student.state_dict().items()}
        seen["report"] = report
        return report

    monkeypatch.setattr(remap, "remap_parameters", spy)
    ensure_pretrained(shared, "remap-weak", progress=False)
    run = named_run(shared, "remap-weak")
    rep = json.loads((run.dir / "remap_report.json").read_text())
    assert rep["sources"] == seen["report"].sources
    copied = [k for k in seen["report"].copied if k in seen["student"]]
    assert any(".encoder.layer.5." in k for k in copied)          # 1-layer teacher repeated to 6
    assert "bert.embeddings.word_embeddings.weight" in copied
    for k in copied:
        assert torch.equal(seen["student"][k], seen["teacher"][rep["sources"][k]]), k
    # and training moved the student away from that init
    assert (run.dir / "model").exists()


def test_finished_run_is_reused(shared, monkeypatch, capsys):
    ensure_pretrained(shared, "dwt-weak", progress=False)
    run = named_run(shared, "dwt-weak")
    log_before, mtime = (run.dir / "log.jsonl").read_text(), run.result_path.stat().st_mtime_ns
    capsys.readouterr()

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(pt, "train", boom)
    res = ensure_pretrained(shared, "dwt-weak", progress=False)
    assert res["run"]["id"] == run.id
    assert (run.dir / "log.jsonl").read_text() == log_before
    assert run.result_path.stat().st_mtime_ns == mtime
    assert "[dwt]" not in capsys.readouterr().out        # neither "starting" nor "resuming"


@pytest.mark.slow
def test_dwt_lowers_heldout_mlm_loss(shared):
    """20 DWT steps from the shared weak teacher on real text (the sample): the held-out MLM loss
    falls below its value at random init (~ln V, uniform predictions) and below the first eval."""
    ensure_pretrained(shared, "teacher-weak", progress=False)
    cfg = cfg_of(**{"pretrain.max_steps": 20, "pretrain.lr": 3e-3, "pretrain.log_every": 5,
                    "pretrain.eval_every": 5, "pretrain.eval_batches": 2, "pretrain.checkpoint_every": 20})
    run = pretrain_run(cfg, "dwt-weak", cfg.model.student, teacher=named_run(shared, "teacher-weak"))
    res = runs.ensure(run, cfg, lambda r: pt.train(cfg, r, progress=False))
    evals = [r["eval_mlm_loss"] for r in read_log(run) if "eval_mlm_loss" in r]
    final = res["final_eval"]["mlm_loss"]
    init = math.log(2000)          # data.vocab_size of the smoke profile; seen: 7.38 at step 5, 7.10 at 20
    assert final < init - 0.3, (final, evals)
    assert final < evals[0], evals


# ----------------------------------------------------------------------------- failures

def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(outputs, monkeypatch):
    cfg = cfg_of(**{"pretrain.checkpoint_every": 2})
    calls = {"n": 0}
    real = losses.hard_loss

    def nan_at_4(logits, y, *a, **k):
        out = real(logits, y, *a, **k)
        if logits.requires_grad:                        # training, not the held-out eval
            calls["n"] += 1
            if calls["n"] == 4:
                return out * float("nan")
        return out

    monkeypatch.setattr(losses, "hard_loss", nan_at_4)
    with pytest.raises(pt.NonFiniteLossError, match=r"at step 4\b"):
        ensure_pretrained(cfg, "student", progress=False)
    run = named_run(cfg, "student")
    assert not run.finished()
    st = torch.load(run.dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert st["step"] == 2 < 4
    model = SparseMLM(build_model(cfg.model.student, st["model"]["mlm.bert.embeddings.word_embeddings.weight"].shape[0]))
    model.load_state_dict(st["model"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [r["step"] for r in read_log(run)] == [1, 2, 3]    # line 3 was written before the NaN step
    row = [r for r in runs.list_runs(cfg) if r["id"] == run.id][0]
    assert row["status"] == "partial" and row["progress"] == pytest.approx(2 / 6)


def test_load_teacher_checks_vocab_and_size(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    build_model("tiny-teacher-1l", 120).save_pretrained(small)
    build_model("tiny-student", 120).save_pretrained(big)
    n_small = count_parameters(build_model("tiny-teacher-2l", 120))
    with pytest.raises(ValueError, match=r"vocabulary \(120\).*\(100\)"):
        init.load_teacher(small, 100, n_small, "cpu")
    with pytest.raises(FileNotFoundError, match="pre-train the teacher"):
        init.load_teacher(tmp_path / "missing", 120, n_small, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # a smaller teacher: no warning
        t = init.load_teacher(small, 120, n_small, "cpu")
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    with pytest.warns(UserWarning, match="larger than the student"):
        t = init.load_teacher(big, 120, n_small, "cpu")
    assert not t.training


# ----------------------------------------------------------------------------- processes

# 12 steps; log every 2 but checkpoint every 3, so a resume from step 3 or 9 starts mid-window
# (the 3-4 line averages steps 3 and 4). The kill comes at step >= 4, well before the end.
KILL = {**BASE, "pretrain.max_steps": 12, "pretrain.log_every": 2, "pretrain.checkpoint_every": 3,
        "pretrain.eval_every": 4}


def _wait(pred, timeout, proc=None, what=""):
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            return False
        if time.time() - t0 > timeout:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.02)
    return True


def _compare_logs(a: list[dict], b: list[dict], tol: float, rel: bool = False):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("loss", "hard", "soft", "lr", "eval_mlm_loss"):
            assert (k in ra) == (k in rb)
            if k in ra:
                err = abs(ra[k] - rb[k]) / (abs(rb[k]) if rel and rb[k] else 1.0)
                assert err <= tol, (k, ra["step"], ra[k], rb[k])


def test_sigkill_and_resume_matches_uninterrupted(tmp_path, monkeypatch):
    """SIGKILL after a checkpoint and a later log line, start again: the resumed run's log is
    the uninterrupted run's (fp32 CPU, dropout on: RNG state comes back from the checkpoint)."""
    killed_out, ref_out = tmp_path / "killed", tmp_path / "ref"
    # it stops after its step-6 checkpoint (steps 3 and 6 saved, log lines 2 and 4 at least) and is killed there
    proc = start_cli(killed_out, "student", KILL, tmp_path / "first.txt", pause_at=6)
    runs_dir = killed_out / "smoke" / "runs"

    def ckpt_and_later_line():
        for d in runs_dir.glob("student-*"):
            ck, log = d / "checkpoints" / "last.pt", d / "log.jsonl"
            if ck.exists() and log.exists() and (killed_out / "paused").exists():
                steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines() if ln.endswith("}")]
                if steps and max(steps) >= 4:
                    return True
        return False

    try:
        alive = _wait(ckpt_and_later_line, 600, proc, "a checkpoint and a log line past it")
        assert alive, "the run ended before it could be killed:\n" + (tmp_path / "first.txt").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    (d,) = [p for p in runs_dir.glob("student-*") if p.is_dir()]
    assert not (d / "result.json").exists()

    # meanwhile: the uninterrupted run, in this process
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(ref_out))
    cfg = load_params("smoke", KILL)
    ref = ensure_pretrained(cfg, "student", progress=False)
    assert ref["run"]["id"] == d.name                   # same config, same run

    proc = start_cli(killed_out, "student", KILL, tmp_path / "second.txt")
    assert proc.wait(240) == 0, (tmp_path / "second.txt").read_text()
    assert "resuming student" in (tmp_path / "second.txt").read_text()
    resumed = [json.loads(ln) for ln in (d / "log.jsonl").read_text().splitlines()]
    _compare_logs(resumed, read_log(named_run(cfg, "student")), 1e-5)
    got = json.loads((d / "result.json").read_text())["final_eval"]["mlm_loss"]
    assert got == pytest.approx(ref["final_eval"]["mlm_loss"], abs=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path, monkeypatch):
    """2 processes x B sequences vs 1 process x 2B: the same global batch, data and masks.
    The loop normalises by global token counts, so only float summation order differs:
    losses agree to 1e-5 relative (seen: ~1e-7). Dropout off: its RNG streams differ per process."""
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    acfg = (REPO / "params/accelerate/2cpu.yaml").read_text().replace("29533", str(_free_port()))
    (tmp_path / "2cpu.yaml").write_text(acfg)
    common = {"pretrain.max_steps": 4, "pretrain.eval_every": 4, "pretrain.checkpoint_every": 4,
              "model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0}
    one = cfg_of(**common, **{"pretrain.batch_size_per_device": 8})
    two = cfg_of(**common, **{"pretrain.batch_size_per_device": 4, "launch.num_processes": 2,
                              "launch.accelerate_config": str(tmp_path / "2cpu.yaml")})
    r2 = ensure_pretrained(two, "student", progress=False)
    r1 = ensure_pretrained(one, "student", progress=False)
    assert r2["world_size"] == 2 and r1["world_size"] == 1 and r1["global_batch"] == r2["global_batch"] == 8
    assert r1["run"]["id"] != r2["run"]["id"]          # world size is part of the run key
    _compare_logs(read_log(named_run(two, "student")), read_log(named_run(one, "student")), 1e-5, rel=True)
    assert r2["final_eval"]["mlm_loss"] == pytest.approx(r1["final_eval"]["mlm_loss"], rel=1e-5)
    assert r2["final_eval"]["eval_tokens"] == r1["final_eval"]["eval_tokens"]
    # each process reads the one cached train.npy through a read-only memory map, not a private copy
    cached = f"data-{r1['data_hash']}/train.npy"
    assert [a["process"] for a in r2["train_blocks_access"]] == [0, 1]
    for a in r2["train_blocks_access"] + r1["train_blocks_access"]:
        assert a["memmap"] and a["read_only"] and a["file"] == cached, a
    assert len({a["inode"] for a in r2["train_blocks_access"] + r1["train_blocks_access"]}) == 1


@pytest.mark.slow
def test_two_processes_with_dropout_resume_matches_uninterrupted(tmp_path, monkeypatch):
    """2 CPU processes (gloo), dropout on: a run stopped after its step-3 checkpoint and started again logs what the
    uninterrupted run logged, because every rank's RNG state is in the checkpoint and each rank gets its own back
    (with rank 0's state on every rank, rank 1 drew other dropout masks after a resume: +0.012 in the loss).
    The stop is made exact rather than raced: the finished run's later outputs are removed down to the state a
    kill right after the step-3 checkpoint leaves (prev.pt, manifest, log), and the run is asked for again."""
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    acfg = (REPO / "params/accelerate/2cpu.yaml").read_text().replace("29533", str(_free_port()))
    (tmp_path / "2cpu.yaml").write_text(acfg)
    cfg = cfg_of(**{"pretrain.max_steps": 6, "pretrain.eval_every": 6, "pretrain.checkpoint_every": 3,
                    "model.hidden_dropout_prob": 0.1, "model.attention_probs_dropout_prob": 0.1,
                    "launch.num_processes": 2, "launch.accelerate_config": str(tmp_path / "2cpu.yaml")})
    ref = ensure_pretrained(cfg, "student", progress=False)
    run = named_run(cfg, "student")
    want = read_log(run)
    ck = run.dir / "checkpoints"
    st = torch.load(ck / "prev.pt", map_location="cpu", weights_only=False)
    assert st["step"] == 3 and len(st["rng_per_rank"]) == 2
    assert all(torch.equal(st["rng"][k], st["rng_per_rank"][0][k]) for k in ("torch",))   # "rng": rank 0's, as before
    # the ranks' generators have parted (dropout on inputs of other shapes): rank 0's state would be wrong for rank 1
    assert not torch.equal(st["rng_per_rank"][0]["torch"], st["rng_per_rank"][1]["torch"])

    for rel in ("result.json", "model", "snapshots", "checkpoints/last.pt"):      # back to just after step 3
        path = run.dir / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    res = ensure_pretrained(cfg, "student", progress=False)
    got = read_log(run)
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3, 4, 5, 6]
    _compare_logs(got, want, 1e-6)
    assert res["final_eval"]["mlm_loss"] == pytest.approx(ref["final_eval"]["mlm_loss"], abs=1e-6)


def test_same_run_from_two_processes_trains_once(tmp_path):
    ov = {**BASE, "pretrain.max_steps": 4, "pretrain.eval_every": 4, "pretrain.checkpoint_every": 4}
    procs = [start_cli(tmp_path, "student", ov, tmp_path / f"p{i}.txt") for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(240) == 0, (tmp_path / f"p{i}.txt").read_text()
    outs = [(tmp_path / f"p{i}.txt").read_text() for i in range(2)]
    assert sum(o.count("[dwt] starting student") for o in outs) == 1, outs
    assert not any("resuming" in o for o in outs)
    (d,) = [p for p in (tmp_path / "smoke" / "runs").glob("student-*") if p.is_dir()]
    steps = [json.loads(ln)["step"] for ln in (d / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    final = [ln for o in outs for ln in o.splitlines() if ln.startswith("student: held-out")]
    assert len(final) == 2 and final[0] == final[1]


def test_truncate_log_on_resume_and_restart(tmp_path):
    """Resume from step k keeps lines <= k; a restart without checkpoint (k = 0) empties the log,
    so a run killed before its first checkpoint does not log its first steps twice; a line
    cut short by the kill is dropped."""
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    checkpoints.truncate_log(log, 3)
    assert [json.loads(ln)["step"] for ln in log.read_text().splitlines()] == [1, 2, 3]
    checkpoints.truncate_log(log, 0)
    assert log.read_text() == ""
    checkpoints.truncate_log(tmp_path / "missing.jsonl", 0)          # no log yet: nothing to do
    assert not (tmp_path / "missing.jsonl").exists()


def test_tensorboard_logging_writes_events(tmp_path, monkeypatch):
    """launch.tensorboard: the same log records also go to TensorBoard through Accelerate's tracker."""
    pytest.importorskip("tensorboard", reason="TensorBoard is in the [dev] extra; install it to run this test")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    cfg = cfg_of(**{"launch.tensorboard": True, "pretrain.max_steps": 2})
    ensure_pretrained(cfg, "student", progress=False)
    events = list(named_run(cfg, "student").dir.glob("tensorboard/**/events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]
    assert {"hard", "soft", "lr", "tokens_per_s"} <= set(acc.Tags()["scalars"])
