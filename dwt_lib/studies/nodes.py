"""Several machines: the same command on every node; node 0 drives, the others join its runs.

With ``launch.num_machines > 1`` every node runs the same ``dwt pretrain | finetune | study | reproduce`` (``srun``
starts it, or you do by hand with ``--node-rank``). Node 0 does all it does on one machine: checks, run locks, the
registry, results, notebooks. Every other node (a follower) only joins each pre-training run node 0 launches, in
order, teachers included, as ``accelerate launch --machine_rank k``, and leaves when node 0 is done. The nodes talk
through small files in the shared outputs folder, ``<outputs>/<profile>/nodes/``, so the check that every node sees
one folder comes with the protocol:

    hello-<k>.json           follower k is up: a fresh nonce (re-written while it waits: node 0 clears stale ones)
    session.json             node 0's answer: the session id and the nonce it saw from each follower
    <sid>/ready-<k>.json     follower k sees the session and node 0's token in the data cache (fail-<k>.json: why not)
    <sid>/alive-<k>.json     a counter each node bumps every few seconds (heartbeat)
    <sid>/run-<n>.json       node 0 opens its n-th run: the run folder (relative to the outputs folder) and name
    <sid>/exit-<n>-<k>.json  how node k's workers of run n ended;  <sid>/end-<n>.json: how node 0's did
    <sid>/done.json          node 0 is done: ok, or its one-line error

Every wait polls with a deadline, ``launch.node_timeout_s``: a node that starts later than that, cannot see the shared
folders, or stops answering (its heartbeat unchanged that long) gives one ``dwt:`` line on every node. Nothing waits
for another node inside a collective outside a training run: node 0 builds the data cache before it announces a run.
Only node 0 ever takes a run lock, so there is one lock holder and no deadlock.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from dwt_lib.config.schema import Config
from dwt_lib.config.load import config_from_dict
from dwt_lib.core.errors import DwtError, NodeError, message  # noqa: F401
from dwt_lib.core.paths import REPO, cache_root
from dwt_lib.core.io import atomic_write_json
from dwt_lib.runs.registry import outputs_dir, read_json

#: Set by node 0 for its own processes (notebook kernels included): the session folder that runs are announced in.
SESSION_ENV = "DWT_NODES_SESSION"
#: This node's rank, set from ``--node-rank``; read before ``launch.node_rank_env``.
RANK_ENV = "DWT_NODE_RANK"
POLL_S = 0.2


def nodes_dir(cfg: Config) -> Path:
    return outputs_dir(cfg) / "nodes"


def node_rank(cfg: Config, flag: Optional[int] = None) -> int:
    """This node's rank: ``--node-rank``, else ``$DWT_NODE_RANK``, else ``$<launch.node_rank_env>`` (SLURM_NODEID)."""
    la = cfg.launch
    for where, v in (("--node-rank", flag), (f"${RANK_ENV}", os.environ.get(RANK_ENV)),
                     (f"${la.node_rank_env}", os.environ.get(la.node_rank_env))):
        if v is None or v == "":
            continue
        try:
            rank = int(v)
        except ValueError:
            rank = -1
        if not 0 <= rank < la.num_machines:
            raise NodeError(f"node rank {v} is not one of 0..{la.num_machines - 1}", where,
                            f"give each of the launch.num_machines = {la.num_machines} nodes its own rank, 0 on the "
                            f"node that drives")
        return rank
    raise NodeError(f"no node rank, and launch.num_machines is {la.num_machines}", f"--node-rank / ${la.node_rank_env}",
                    "start the same command on every node with --node-rank K (0 on the node that drives), or under "
                    "srun, which sets $SLURM_NODEID")


def worker_command(cfg: Config, run_dir: Path, name: str, machine_rank: int = 0) -> list[str]:
    """The ``accelerate launch`` of one pre-training run's workers on this node."""
    la = cfg.launch
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if la.accelerate_config:
        acfg = la.accelerate_config
        cmd += ["--config_file", acfg if os.path.isabs(acfg) else str(REPO / acfg)]
    cmd += ["--num_processes", str(la.num_processes)]
    if la.num_machines > 1:
        host, _, port = la.rdzv_endpoint.rpartition(":")
        cmd += ["--num_machines", str(la.num_machines), "--machine_rank", str(machine_rank),
                "--main_process_ip", host, "--main_process_port", port, "--rdzv_backend", la.rdzv_backend]
    return cmd + ["-m", "dwt_lib.cli", "_worker", "--run-dir", str(run_dir), "--name", name]


# ----------------------------------------------------------------------------- files

def _read(path: Path) -> Optional[dict]:
    try:
        v = read_json(path)
    except Exception:            # absent, or being replaced: the next poll reads it
        return None
    return v if isinstance(v, dict) else None


class Heartbeat:
    """A thread that bumps ``alive-<k>.json`` every ``timeout / 6`` seconds (at most 5) while this node lives."""

    def __init__(self, folder: Path, rank: int, timeout: float):
        self.path, self.every, self.stop_ = folder / f"alive-{rank}.json", min(5.0, timeout / 6), threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"dwt-heartbeat-{rank}")

    def _beat(self) -> None:
        n = 0
        while not self.stop_.is_set():
            n += 1
            try:
                atomic_write_json(self.path, {"beat": n, "pid": os.getpid()})
            except OSError:
                pass
            self.stop_.wait(self.every)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_.set()


class Watch:
    """Whether another node's heartbeat stood still for ``timeout`` seconds, by this node's own clock."""

    def __init__(self, folder: Path, rank: int, timeout: float):
        self.path, self.timeout, self.last, self.since = folder / f"alive-{rank}.json", timeout, None, time.monotonic()

    def stale(self) -> bool:
        beat = (_read(self.path) or {}).get("beat")
        if beat != self.last:
            self.last, self.since = beat, time.monotonic()
        return time.monotonic() - self.since > self.timeout


def _kill(proc: subprocess.Popen) -> None:
    """Stop a launch this node started (its own process group: the launcher and its workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _shared_hint(cfg: Config) -> str:
    return (f"start the same command on all {cfg.launch.num_machines} nodes within launch.node_timeout_s, each with "
            f"its own --node-rank, and give them one shared outputs folder (DWT_OUTPUTS_DIR) and data cache "
            f"(DWT_CACHE_DIR, default <outputs>/.cache)")


# ----------------------------------------------------------------------------- node 0

class Driver:
    """Node 0's side, around the whole command: meet the followers, check the shared folders, announce each run
    (:func:`launch`), and say ``done`` at the end (with the error line if the command failed)."""

    def __init__(self, cfg: Config):
        self.cfg, self.root, self.timeout = cfg, nodes_dir(cfg), cfg.launch.node_timeout_s
        self.followers = range(1, cfg.launch.num_machines)
        self.folder: Optional[Path] = None
        self.error: Optional[str] = None

    def __enter__(self) -> "Driver":
        import shutil
        self.root.mkdir(parents=True, exist_ok=True)
        for p in list(self.root.glob("hello-*.json")) + [self.root / "session.json"]:
            p.unlink(missing_ok=True)
        for old in self.root.iterdir():              # earlier sessions (a killed attempt): no one follows them now
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        sid = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        self.folder = self.root / sid
        self.folder.mkdir()
        self.token = cache_root() / f".nodes-{sid}"
        self.token.parent.mkdir(parents=True, exist_ok=True)
        self.token.write_text(sid)
        self.beat = Heartbeat(self.folder, 0, self.timeout).__enter__()
        try:
            nonces = self._wait_hellos()
            atomic_write_json(self.root / "session.json", {"session": sid, "nonces": nonces,
                                                           "machines": self.cfg.launch.num_machines})
            self._wait_ready()
        except BaseException as e:
            self.__exit__(type(e), e, None)
            raise
        os.environ[SESSION_ENV] = str(self.folder)
        os.environ[RANK_ENV] = "0"
        print(f"[dwt] node 0: {len(self.followers)} other node(s) joined, outputs folder shared ({self.root})",
              flush=True)
        return self

    def _wait_hellos(self) -> dict:
        deadline, nonces = time.monotonic() + self.timeout, {}
        while True:
            for k in self.followers:
                h = _read(self.root / f"hello-{k}.json")
                if h and "nonce" in h:
                    nonces[str(k)] = h["nonce"]
            missing = [k for k in self.followers if str(k) not in nonces]
            if not missing:
                return nonces
            if time.monotonic() > deadline:
                raise NodeError(f"node(s) {', '.join(map(str, missing))} did not check in within "
                                f"{self.timeout:g} s (launch.node_timeout_s)", self.root, _shared_hint(self.cfg))
            time.sleep(POLL_S)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for k in self.followers:
                f = _read(self.folder / f"fail-{k}.json")
                if f:
                    raise NodeError(f"node {k} stopped: {f['error']}", self.folder, _shared_hint(self.cfg))
            missing = [k for k in self.followers if not (self.folder / f"ready-{k}.json").exists()]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise NodeError(f"node(s) {', '.join(map(str, missing))} did not confirm the shared folders within "
                                f"{self.timeout:g} s", self.folder, _shared_hint(self.cfg))
            time.sleep(POLL_S)

    def failed(self, error: str) -> None:
        """The command ended without an exception but did not succeed (a notebook failed): tell the followers."""
        self.error = error

    def __exit__(self, tp, exc, tb) -> None:
        if exc is not None:
            self.error = message(exc) or f"{type(exc).__name__}: {exc} (its traceback is on node 0)"
        atomic_write_json(self.folder / "done.json", {"ok": self.error is None, "error": self.error})
        self.beat.__exit__()
        self.token.unlink(missing_ok=True)
        for k in (SESSION_ENV, RANK_ENV):
            os.environ.pop(k, None)


def launch(cfg: Config, run_dir: Path, name: str) -> None:
    """Start this node's workers of a pre-training run and wait for them. On several machines (node 0): announce the
    run first, then watch the followers; a follower whose workers fail or whose heartbeat stops ends the run on every
    node with one line."""
    cmd = worker_command(cfg, run_dir, name, 0)
    if cfg.launch.num_machines == 1:
        subprocess.run(cmd, check=True)
        return
    if not os.environ.get(SESSION_ENV):
        raise NodeError(f"launch.num_machines is {cfg.launch.num_machines} but no node session is open", name,
                        "start it with dwt pretrain | finetune | study | reproduce on every node (they meet first)")
    folder, timeout = Path(os.environ[SESSION_ENV]), cfg.launch.node_timeout_s
    followers = range(1, cfg.launch.num_machines)
    n = 1 + len(list(folder.glob("run-*.json")))
    rel = os.path.relpath(run_dir, outputs_dir(cfg))
    atomic_write_json(folder / f"run-{n}.json", {"run": n, "name": name, "run_dir": rel})
    watches = {k: Watch(folder, k, timeout) for k in followers}

    def problems() -> list[str]:
        out = []
        for k in followers:
            ex = _read(folder / f"exit-{n}-{k}.json")
            if ex and ex.get("code"):
                out.append(f"node {k}'s workers exited with code {ex['code']}")
            elif watches[k].stale():
                out.append(f"node {k} stopped answering (no heartbeat for {timeout:g} s: killed, or its machine "
                           f"is down)")
        return out

    # A lost follower stops the run at once; a follower whose workers failed gives ours `timeout` seconds to end on
    # their own (they normally fail too, or finish: a teardown error there after the last collective is noise).
    proc = subprocess.Popen(cmd, start_new_session=True)
    found: list[str] = []
    since = None
    try:
        while proc.poll() is None:
            found = problems()
            if any("stopped answering" in f for f in found):
                break
            since = (since or time.monotonic()) if found else None
            if since and time.monotonic() - since > timeout:
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            _kill(proc)
    code = proc.returncode
    found = found if code else []
    if code and not found:           # a worker here failed: say which node lost its peer (or failed) first
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            found = problems()
            time.sleep(POLL_S)
        found = found + [f"node 0's workers exited with code {code}"]
    error = None
    if found:
        error = (f"run {name} stopped: {'; '.join(found)} (a worker's own error, if any, is printed above on its "
                 f"node)")
    atomic_write_json(folder / f"end-{n}.json", {"ok": error is None, "error": error})
    if error:
        raise NodeError(error, run_dir, "rerun the same command on every node: finished runs are kept and this one "
                                        "resumes from its last checkpoint")


# ----------------------------------------------------------------------------- the other nodes

def follow(cfg: Config, rank: int) -> int:
    """Node ``rank`` > 0: meet node 0, then join every run it announces until it is done. Returns an exit code."""
    root, timeout = nodes_dir(cfg), cfg.launch.node_timeout_s
    root.mkdir(parents=True, exist_ok=True)
    nonce = uuid.uuid4().hex
    hello = root / f"hello-{rank}.json"
    deadline = time.monotonic() + timeout
    while True:
        if (_read(hello) or {}).get("nonce") != nonce:      # node 0 clears stale hellos when it starts
            atomic_write_json(hello, {"nonce": nonce, "pid": os.getpid()})
        s = _read(root / "session.json")
        if s and s.get("nonces", {}).get(str(rank)) == nonce:
            break
        if time.monotonic() > deadline:
            raise NodeError(f"node 0 did not answer node {rank} within {timeout:g} s (launch.node_timeout_s)", root,
                            _shared_hint(cfg))
        time.sleep(POLL_S)
    folder = root / s["session"]
    token = cache_root() / f".nodes-{s['session']}"
    deadline = time.monotonic() + timeout
    while not token.exists():
        if time.monotonic() > deadline:
            err = NodeError(f"node {rank} cannot see node 0's token in the data cache within {timeout:g} s", token,
                            "give every node one shared data cache (DWT_CACHE_DIR, default <outputs>/.cache)")
            atomic_write_json(folder / f"fail-{rank}.json", {"error": err.line()})
            raise err
        time.sleep(POLL_S)
    atomic_write_json(folder / f"ready-{rank}.json", {"pid": os.getpid()})
    print(f"[dwt] node {rank}: joined node 0's session {s['session']}; waiting for its runs", flush=True)
    n = 0
    with Heartbeat(folder, rank, timeout):
        node0 = Watch(folder, 0, timeout)
        while True:
            ann = _read(folder / f"run-{n + 1}.json")
            if ann:
                n += 1
                _join(cfg, rank, folder, ann, node0)
                continue
            done = _read(folder / "done.json")
            if done:
                if not done.get("ok"):
                    raise NodeError(f"node 0 stopped: {done.get('error')}", folder,
                                    "fix that and rerun the same command on every node (it resumes)")
                print(f"[dwt] node {rank}: node 0 is done; joined {n} run(s)", flush=True)
                return 0
            if node0.stale():
                raise _node0_lost(timeout, folder)
            time.sleep(POLL_S)


def _node0_lost(timeout: float, folder: Path) -> NodeError:
    return NodeError(f"node 0 stopped answering (no heartbeat for {timeout:g} s: killed, or its machine is down)",
                     folder, "rerun the same command on every node: it resumes from the last checkpoint")


def _join(cfg: Config, rank: int, folder: Path, ann: dict, node0: Watch) -> None:
    """Run this node's workers of node 0's run ``ann``; its outcome is node 0's (``end-<n>.json``)."""
    n, name = ann["run"], ann["name"]
    run_dir = outputs_dir(cfg) / ann["run_dir"]
    rcfg = config_from_dict(read_json(run_dir / "config.json"))    # what node 0 launched with
    print(f"[dwt] node {rank}: joining run {n}, {name} ({run_dir.name})", flush=True)
    proc = subprocess.Popen(worker_command(rcfg, run_dir, name, rank), start_new_session=True)
    lost = None
    try:
        while proc.poll() is None:
            done = _read(folder / f"end-{n}.json") or _read(folder / "done.json")
            if done and not done.get("ok"):
                lost = NodeError(f"node 0 stopped: {done.get('error')}", folder,
                                 "fix that and rerun the same command on every node (it resumes)")
            elif node0.stale():
                lost = _node0_lost(cfg.launch.node_timeout_s, folder)
            if lost:
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            _kill(proc)
    atomic_write_json(folder / f"exit-{n}-{rank}.json", {"code": proc.returncode})
    if lost:
        raise lost
    while True:                                       # node 0's launch decides (a late teardown error here is noise)
        end = _read(folder / f"end-{n}.json")
        if end:
            if not end.get("ok"):
                raise NodeError(f"node 0 stopped: {end.get('error')}", folder,
                                "rerun the same command on every node: it resumes from the last checkpoint")
            return
        if node0.stale():
            raise _node0_lost(cfg.launch.node_timeout_s, folder)
        time.sleep(POLL_S)
