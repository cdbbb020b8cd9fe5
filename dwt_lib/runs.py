"""Run registry: one folder per run, named by the hash of everything that determines it.

``outputs/<profile>/runs/<kind>-<hash>/`` holds ``config.json`` (what determines the run,
plus the resolved profile), ``log.jsonl``, ``checkpoints/``, ``snapshots/`` and, once
finished, ``result.json``. A finished run is reused, an unfinished one resumes, and a file
lock keeps two processes from training the same run. Every JSON file is written atomically
(temp file + ``os.replace``), so a kill never leaves half a result.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from filelock import FileLock

from .config import Config, stable_hash

REPO = Path(__file__).resolve().parent.parent


def outputs_dir(cfg: Config) -> Path:
    """``$DWT_OUTPUTS_DIR/<profile>`` (default ``<repo>/outputs/<profile>``)."""
    root = Path(os.environ.get("DWT_OUTPUTS_DIR", REPO / "outputs"))
    return root / cfg.profile


# ----------------------------------------------------------------------------- atomic I/O

def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON version of :func:`atomic_write_text` (indented, sorted keys)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------- provenance

def git_commit() -> str:
    """The repo's HEAD commit, with ``+dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty and sha else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    """Versions of Python and the packages that determine results."""
    import importlib.metadata as md
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "accelerate", "tokenizers", "datasets", "numpy", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def provenance(cfg: Config, wall_time_s: Optional[float] = None) -> dict:
    """What every result file records: resolved config, its hash, git commit, versions, wall time."""
    return {"profile": cfg.profile, "config": cfg.to_dict(), "config_hash": cfg.short_hash(),
            "git_commit": git_commit(), "versions": versions(), "wall_time_s": wall_time_s,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_result(path: Path, cfg: Config, payload: dict, wall_time_s: Optional[float] = None) -> dict:
    """Write a result file: ``payload`` plus :func:`provenance`, atomically. Returns what was written."""
    obj = dict(payload)
    obj["provenance"] = provenance(cfg, wall_time_s)
    atomic_write_json(path, obj)
    return obj


# ----------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class Run:
    """A run's identity. ``key`` holds everything that determines it (JSON-able)."""
    kind: str                     # teacher | student | dwt | finetune
    name: str                     # human label, e.g. "teacher-weak"; not part of the identity
    key: dict = field(hash=False)
    root: Path = field(hash=False)

    @property
    def id(self) -> str:
        return f"{self.kind}-{stable_hash(self.key, 10)}"

    @property
    def dir(self) -> Path:
        return self.root / "runs" / self.id

    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    def finished(self) -> bool:
        return self.result_path.exists()

    def result(self) -> dict:
        return read_json(self.result_path)

    def lock(self) -> FileLock:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.dir) + ".lock")


def ensure(run: Run, cfg: Config, train: Callable[[Run], dict], log: Callable[[str], None] = print) -> dict:
    """Return the run's result, training it first when it is not finished.

    ``train(run)`` does (or resumes) the work inside ``run.dir`` and returns the result
    payload; it is called under the run's lock, so a second process asking for the same
    run waits and then reads the result instead of training it again.
    """
    if run.finished():
        return run.result()
    with run.lock():
        if run.finished():          # another process finished it while we waited
            return run.result()
        run.dir.mkdir(parents=True, exist_ok=True)
        if not (run.dir / "run.json").exists():
            atomic_write_json(run.dir / "run.json", {"kind": run.kind, "name": run.name, "id": run.id,
                                                     "key": run.key, "profile": cfg.profile})
        state = "resuming" if (run.dir / "checkpoints").exists() else "starting"
        log(f"[dwt] {state} {run.name} ({run.id})")
        t0 = time.time()
        payload = train(run)
        payload.setdefault("run", {"kind": run.kind, "name": run.name, "id": run.id, "key": run.key})
        return write_result(run.result_path, cfg, payload, wall_time_s=time.time() - t0)


def list_runs(cfg: Config) -> list[dict]:
    """Every run folder of the profile with status (finished / partial / new), progress and wall time."""
    rows = []
    for d in sorted((outputs_dir(cfg) / "runs").glob("*-*")):
        if not d.is_dir() or not (d / "run.json").exists():
            continue
        meta = read_json(d / "run.json")
        row = {"id": d.name, "name": meta.get("name"), "kind": meta.get("kind"),
               "status": "new", "progress": 0.0, "wall_time_s": None}
        if (d / "result.json").exists():
            res = read_json(d / "result.json")
            row.update(status="finished", progress=1.0, wall_time_s=res["provenance"].get("wall_time_s"))
        elif (d / "progress.json").exists():
            p = read_json(d / "progress.json")
            row.update(status="partial", progress=p.get("step", 0) / max(p.get("total_steps", 1), 1),
                       wall_time_s=p.get("elapsed_s"))
        rows.append(row)
    return rows


def format_runs(rows: list[dict]) -> str:
    """A plain-text table of :func:`list_runs` rows."""
    if not rows:
        return "(no runs)"
    lines = [f"{'id':<22} {'name':<28} {'status':<9} {'progress':>8} {'wall':>8}"]
    for r in rows:
        wall = f"{r['wall_time_s']:.0f}s" if r["wall_time_s"] is not None else "-"
        lines.append(f"{r['id']:<22} {str(r['name']):<28} {r['status']:<9} {r['progress']:>8.0%} {wall:>8}")
    return "\n".join(lines)
