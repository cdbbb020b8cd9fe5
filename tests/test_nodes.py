"""Several machines (dwt_lib/nodes.py), tested as two "machines" on localhost: two separate process groups of one CPU
process each, gloo, rendezvous on 127.0.0.1 at a free port, one shared outputs folder and data cache.

- through tools/slurm/dwt.sbatch with `srun` and `scontrol` replaced by local stand-ins (PATH shims): the weights of
  `dwt pretrain --profile smoke --run dwt-weak` equal those of 2 processes on one machine;
- node 1 killed mid-run (every process of it, as a machine going down): node 0 stops with one line, and the same
  command rerun on both nodes (by hand, --node-rank) resumes to the same result;
- node 1 with an outputs folder of its own: one line on each node within launch.node_timeout_s.

The slow tests share one reference (2 processes on one machine) and one data cache. Every wait polls with a deadline.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dwt_lib.core.errors import ConfigError
from dwt_lib.config.load import load_params
from dwt_lib.core.errors import NodeError
from dwt_lib.studies.nodes import node_rank, worker_command
from dwt_lib.studies.plan import device_time, format_plan, make_plan
from dwt_lib.studies.identity import ensure_pretrained, named_run

REPO = Path(__file__).resolve().parent.parent
SBATCH = REPO / "tools" / "slurm" / "dwt.sbatch"

# 24 steps of 2 x 4 sequences (smoke's global batch, 8), a log line every step, a checkpoint every 3: the kill
# comes after step 4 with ~20 steps to spare. The weak teacher is the 1-layer size (cheap). Dropout off, as in
# tests/test_pretrain.py's 2-vs-1 test: a checkpoint holds rank 0's RNG state only, so with dropout on, rank 1's
# dropout after a resume differs from an uninterrupted run's (on one machine as on two; seen: +0.012 in the loss).
OV = {"pretrain.max_steps": 24, "pretrain.log_every": 1, "pretrain.eval_every": 12, "pretrain.eval_batches": 1,
      "pretrain.checkpoint_every": 3, "pretrain.snapshot_fractions": [1.0], "model.teachers.weak": "tiny-teacher-1l",
      "model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0}
TIMEOUT = 30            # launch.node_timeout_s in the tests (default 300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(ov: dict) -> list[str]:
    return [a for k, v in ov.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _two_machines(port: int, timeout: float = TIMEOUT) -> dict:
    return {**OV, "launch.num_machines": 2, "launch.num_processes": 2, "pretrain.batch_size_per_device": 4,
            "launch.rdzv_endpoint": f"127.0.0.1:{port}", "launch.accelerate_config": "params/accelerate/multinode.yaml",
            "launch.node_timeout_s": timeout}


def _env(outputs: Path, cache: Path) -> dict:
    env = dict(os.environ, DWT_OUTPUTS_DIR=str(outputs), DWT_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("SLURM_NODEID", "DWT_NODE_RANK", "DWT_NODES_SESSION"):
        env.pop(k, None)
    return env


def _node(rank: int, outputs: Path, cache: Path, ov: dict, log: Path) -> subprocess.Popen:
    """One "machine": `dwt pretrain --run dwt-weak --node-rank K` in a process group (and session) of its own."""
    cmd = [sys.executable, "-m", "dwt_lib.cli", "pretrain", "--profile", "smoke", "--run", "dwt-weak",
           "--node-rank", str(rank), *_sets(ov)]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(outputs, cache), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(pred, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc): torchrun starts its workers in sessions of their own."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo += kids.get(q, [])
    return out


def _dwt_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("dwt: ")]


def _same_weights(a: Path, b: Path) -> float:
    """Largest difference between two saved models' weights (asserting they agree to the 2-vs-1 tolerance)."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = 0.0
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6), k
        worst = max(worst, (wa[k] - wb[k]).abs().max().item())
    return worst


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln]


def _same_logs(a: list[dict], b: list[dict]) -> None:
    """As tests/test_pretrain.py's 2-vs-1 check: the same steps, losses within 1e-5 relative."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("loss", "hard", "soft", "lr", "eval_mlm_loss"):
            assert (k in ra) == (k in rb)
            if k in ra:
                assert abs(ra[k] - rb[k]) <= 1e-5 * (abs(rb[k]) or 1.0), (k, ra["step"], ra[k], rb[k])


# ----------------------------------------------------------------------------- fast: settings, plan, script

def test_several_machines_settings_are_checked():
    ok = load_params("smoke", {"launch.num_machines": 2, "launch.num_processes": 4,
                               "launch.rdzv_endpoint": "node001:29500"})
    assert (ok.launch.num_machines, ok.launch.rdzv_backend, ok.launch.node_timeout_s) == (2, "static", 300.0)
    bad = [({"launch.num_machines": 2, "launch.num_processes": 3, "launch.rdzv_endpoint": "h:1"},
            "launch.num_processes: expected a multiple of launch.num_machines (2)"),
           ({"launch.num_machines": 2, "launch.num_processes": 2}, "launch.rdzv_endpoint: expected host:port of node 0"),
           ({"launch.rdzv_endpoint": "node001"}, "launch.rdzv_endpoint: expected host:port"),
           ({"launch.rdzv_endpoint": "node001:99999"}, "launch.rdzv_endpoint: expected host:port"),
           ({"launch.rdzv_backend": "etcd"}, "launch.rdzv_backend: expected one of static, c10d"),
           ({"launch.num_machines": 0}, "launch.num_machines: expected an integer >= 1"),
           ({"launch.node_timeout_s": 0}, "launch.node_timeout_s: expected a positive number")]
    for ov, msg in bad:
        with pytest.raises(ConfigError) as e:
            load_params("smoke", ov)
        assert msg in str(e.value) and "params/smoke.yaml" in str(e.value), str(e.value)


def test_run_identity_ignores_how_processes_are_spread(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    one = load_params("smoke", {"launch.num_processes": 2})
    two = one.replace(**{"launch.num_machines": 2, "launch.rdzv_endpoint": "127.0.0.1:29500",
                         "launch.node_timeout_s": 5})
    for name in ("teacher-weak", "dwt-weak", "student"):
        assert named_run(one, name).id == named_run(two, name).id


def test_node_rank_and_worker_command(monkeypatch):
    cfg = load_params("smoke", {"launch.num_machines": 2, "launch.num_processes": 2,
                                "launch.rdzv_endpoint": "10.0.0.1:29511", "launch.rdzv_backend": "c10d"})
    for k in ("DWT_NODE_RANK", "SLURM_NODEID"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(NodeError, match="no node rank"):
        node_rank(cfg)
    monkeypatch.setenv("SLURM_NODEID", "1")
    assert node_rank(cfg) == 1 and node_rank(cfg, 0) == 0
    with pytest.raises(NodeError, match=r"node rank 2 is not one of 0..1 \(--node-rank\)"):
        node_rank(cfg, 2)
    cmd = worker_command(cfg, Path("/o/runs/x"), "student", 1)
    i = cmd.index("-m", 3)
    assert cmd[3:i] == ["--config_file", str(REPO / "params/accelerate/1cpu.yaml"), "--num_processes", "2",
                        "--num_machines", "2", "--machine_rank", "1", "--main_process_ip", "10.0.0.1",
                        "--main_process_port", "29511", "--rdzv_backend", "c10d"]
    one = worker_command(load_params("smoke"), Path("/o/runs/x"), "student")
    assert "--num_machines" not in one                # one machine: the launch as before


def test_plan_wall_time_for_the_machines():
    paper = load_params("paper")
    four = paper.replace(**{"launch.num_machines": 4, "launch.num_processes": 32,
                            "pretrain.batch_size_per_device": 4, "launch.rdzv_endpoint": "n1:29500"})
    p1, p4 = make_plan(paper), make_plan(four)
    assert p1["global_batch"] == p4["global_batch"] == 128
    t1, t4 = device_time(paper, p1), device_time(four, p4)
    assert t4["pretrain_s"] == pytest.approx(t1["pretrain_s"] / 4, rel=1e-3)
    text = format_plan(p4)
    assert "4 machine(s) x 8 device(s)" in text, text


def test_sbatch_script_parses():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    acc = (REPO / "params/accelerate/multinode.yaml").read_text()
    assert "num_machines: 2" in acc and "rdzv_backend: static" in acc


# ----------------------------------------------------------------------------- slow: two "machines" on localhost

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("nodes-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    """dwt-weak trained by 2 processes on one machine (params/accelerate/2cpu.yaml), in this process's outputs."""
    out = tmp_path_factory.mktemp("nodes-ref")
    acfg = (REPO / "params/accelerate/2cpu.yaml").read_text().replace("29533", str(_free_port()))
    (out / "2cpu.yaml").write_text(acfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWT_OUTPUTS_DIR", str(out))
        mp.setenv("DWT_CACHE_DIR", str(cache))
        cfg = load_params("smoke", {**OV, "launch.num_processes": 2, "pretrain.batch_size_per_device": 4,
                                    "launch.accelerate_config": str(out / "2cpu.yaml")})
        res = ensure_pretrained(cfg, "dwt-weak", progress=False)
        run_dir = named_run(cfg, "dwt-weak").dir
    return res, run_dir


def _check_against(reference, run_dir: Path) -> float:
    ref, ref_dir = reference
    res = json.loads((run_dir / "result.json").read_text())
    assert res["run"]["id"] == ref["run"]["id"] and res["world_size"] == 2 and res["global_batch"] == 8
    _same_logs(_log(run_dir), _log(ref_dir))
    assert res["final_eval"]["mlm_loss"] == pytest.approx(ref["final_eval"]["mlm_loss"], rel=1e-5)
    return _same_weights(run_dir / "model", ref_dir / "model")


def _shims(folder: Path) -> Path:
    """`srun` starting its command once per node (SLURM_NODEID 0..N-1, each logging to node-<k>.txt) and
    `scontrol show hostnames` naming 127.0.0.1 for every node."""
    folder.mkdir()
    (folder / "srun").write_text("""#!/bin/bash
while [[ $1 == -* ]]; do shift; done
pids=()
for ((k = 0; k < SLURM_NNODES; k++)); do
  SLURM_NODEID=$k SLURM_PROCID=$k SLURM_LOCALID=0 "$@" > "$SHIM_LOGS/node-$k.txt" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
""")
    (folder / "scontrol").write_text("""#!/bin/bash
[ "$1 $2" = "show hostnames" ] || { echo "scontrol shim: only 'show hostnames'" >&2; exit 1; }
for ((k = 0; k < SLURM_NNODES; k++)); do echo 127.0.0.1; done
""")
    for f in ("srun", "scontrol"):
        (folder / f).chmod((folder / f).stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.slow
def test_sbatch_two_nodes_match_two_processes_on_one_machine(tmp_path, cache, reference):
    """tools/slurm/dwt.sbatch with local srun/scontrol: two nodes x 1 process, the profile's global batch 8 kept as
    2 x 4, the same `dwt pretrain --profile smoke --run dwt-weak` on each; node 0's weights are those of 2 processes
    on one machine."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    env = _env(out, cache)
    env.update(PATH=f"{_shims(tmp_path / 'bin')}{os.pathsep}{env['PATH']}", SHIM_LOGS=str(logs), SLURM_NNODES="2",
               SLURM_JOB_NODELIST="node[1-2]", DWT_GPUS_PER_NODE="1", DWT_PORT=str(_free_port()),
               DWT_PYTHON=sys.executable, DWT_REPO=str(REPO), DWT_ACCELERATE_CONFIG="params/accelerate/multinode.yaml")
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(SBATCH), "pretrain", "--profile", "smoke", "--run", "dwt-weak",
                        *_sets({**OV, "launch.node_timeout_s": TIMEOUT})],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    node = [(logs / f"node-{k}.txt").read_text() if (logs / f"node-{k}.txt").exists() else "" for k in (0, 1)]
    assert p.returncode == 0, (p.stdout, p.stderr, node)
    assert "2 nodes x 1 GPUs, global batch 8 = 2 x 4, node 0 127.0.0.1:" in p.stdout
    assert "dwt-weak: held-out MLM loss" in node[0]
    assert "joining run 1, teacher-weak" in node[1] and "joining run 2, dwt-weak" in node[1]
    assert "node 0 is done; joined 2 run(s)" in node[1]
    (run_dir,) = [d for d in (out / "smoke" / "runs").glob("dwt-*") if d.is_dir()]
    worst = _check_against(reference, run_dir)
    print(f"two nodes through dwt.sbatch: {time.monotonic() - t0:.0f} s; largest weight difference {worst:.2e}")


@pytest.mark.slow
def test_node_killed_mid_run_then_rerun_resumes(tmp_path, cache, reference):
    """Every process of node 1 killed after a checkpoint of dwt-weak: node 0 says so in one line; the same commands
    again on both nodes reuse the teacher, resume the student and end where the uninterrupted run does."""
    out, port = tmp_path / "out", _free_port()
    ov = _two_machines(port)
    n0, n1 = (_node(k, out, cache, ov, tmp_path / f"first-{k}.txt") for k in (0, 1))
    runs = out / "smoke" / "runs"

    def checkpoint_and_later_line() -> bool:
        for d in [d for d in runs.glob("dwt-*") if d.is_dir()]:
            log = d / "log.jsonl"
            if (d / "checkpoints" / "last.pt").exists() and log.exists():
                steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines() if ln.endswith("}")]
                if steps and max(steps) >= 4:
                    return True
        assert n0.poll() is None and n1.poll() is None, (tmp_path / "first-0.txt").read_text()
        return False

    try:
        _wait(checkpoint_and_later_line, 300, "a checkpoint of dwt-weak and a log line past it")
        for pid in _tree(n1.pid):                     # the machine goes down: node 1 and its workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t_kill = time.monotonic()
        (d,) = [d for d in runs.glob("dwt-*") if d.is_dir()]
        assert not (d / "result.json").exists(), "dwt-weak finished before node 1 could be killed"
        assert n0.wait(TIMEOUT + 120) == 2
        waited = time.monotonic() - t_kill
    finally:
        for p in (n0, n1):
            if p.poll() is None:
                p.kill()
    first = (tmp_path / "first-0.txt").read_text()
    lines = _dwt_lines(first)
    assert len(lines) == 1 and lines[0].startswith("dwt: run dwt-weak stopped: node 1 stopped answering"), first
    assert "rerun the same command on every node" in lines[0] and first.rstrip().endswith(lines[0])
    assert waited < TIMEOUT + 60, waited       # node 0's worker traceback (gloo: peer gone) comes before the line

    n0, n1 = (_node(k, out, cache, ov, tmp_path / f"second-{k}.txt") for k in (0, 1))
    assert n0.wait(600) == 0 and n1.wait(120) == 0, [(tmp_path / f"second-{k}.txt").read_text() for k in (0, 1)]
    second = (tmp_path / "second-0.txt").read_text()
    assert "resuming dwt-weak" in second and "starting teacher-weak" not in second, second
    assert "joining run 1, dwt-weak" in (tmp_path / "second-1.txt").read_text()   # the teacher: reused, not run
    worst = _check_against(reference, d)
    print(f"node 0's line {waited:.0f} s after the kill: {lines[0]}; resumed, largest weight difference {worst:.2e}")


@pytest.mark.slow
def test_node_with_its_own_outputs_folder_stops_every_node(tmp_path, cache):
    """Node 1 sees another outputs folder than node 0: each node stops with one line within the timeout."""
    timeout, port = 15, _free_port()
    ov = _two_machines(port, timeout)
    procs = [_node(k, tmp_path / f"out-{k}", cache, ov, tmp_path / f"node-{k}.txt") for k in (0, 1)]
    t0 = time.monotonic()
    try:
        codes = [p.wait(timeout + 120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    took = time.monotonic() - t0
    texts = [(tmp_path / f"node-{k}.txt").read_text() for k in (0, 1)]
    assert codes == [2, 2], texts
    l0, l1 = (_dwt_lines(t) for t in texts)
    assert len(l0) == 1 and "node(s) 1 did not check in within 15 s" in l0[0] and "shared outputs folder" in l0[0]
    assert len(l1) == 1 and "node 0 did not answer node 1 within 15 s" in l1[0] and "shared outputs folder" in l1[0]
    assert not any("Traceback" in t for t in texts)
    assert not (tmp_path / "out-0" / "smoke" / "runs").exists()       # nothing trained
    print(f"both nodes stopped {took:.0f} s after starting (timeout {timeout} s): {l0[0]} | {l1[0]}")
