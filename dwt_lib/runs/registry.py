"""Run registry: one folder per run, named by the hash of everything that determines it.

``outputs/<profile>/runs/<kind>-<hash>/`` holds ``config.json`` (what determines the run,
plus the resolved profile), ``log.jsonl``, ``checkpoints/``, ``snapshots/`` and, once
finished, ``result.json``. A finished run is reused, an unfinished one resumes, and a file
lock keeps two processes from training the same run. Every JSON file is written atomically
(temp file + ``os.replace``), so a kill never leaves half a result.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from filelock import FileLock, Timeout

from dwt_lib.core.io import atomic_write_json, move_aside
from dwt_lib.config.schema import Config
from dwt_lib.core.hashing import stable_hash
from dwt_lib.core import readonly
from dwt_lib.core.errors import DamagedFileError, Interrupted, ReadOnlyError
from dwt_lib.data.sources import describe_sources
from dwt_lib.runs import integrity
from dwt_lib.runs.checkpoints import step_of
from dwt_lib.runs.machine import machine
from dwt_lib.core.paths import REPO, outputs_root  # noqa: F401  (REPO: importable from here)


def outputs_dir(cfg: Config) -> Path:
    """``$DWT_OUTPUTS_DIR/<profile>`` (default ``<repo>/outputs/<profile>``), absolute (:mod:`dwt_lib.core.paths`)."""
    return outputs_root() / cfg.profile


def registry_root(cfg: Config) -> Path:
    """The root of the profile's runs (a run is ``<root>/runs/<id>``): :func:`outputs_dir`, or in read-only mode
    the exported registry ``<outputs>/<profile>/registry`` (:mod:`dwt_lib.core.readonly`), laid out the same way."""
    return readonly.export_dir(cfg.profile) if readonly.enabled() else outputs_dir(cfg)


def model_folders(run_dir: Path, res: dict) -> list[str]:
    """The saved model folders a finished pre-training run must have intact: ``model`` and its snapshots. In
    read-only mode an exported run (``export.json``, written by ``dwt export``) keeps only some of them, and only
    those are checked; otherwise every folder is (a run of an ordinary registry has no such record, and one copied
    there from an export is restored as a run with a deleted model is)."""
    # dict.fromkeys: a run with no training steps (random-init) names "model" as every snapshot: checked once
    folders = list(dict.fromkeys(["model"] + sorted(v for v in (res.get("snapshots") or {}).values()
                                                    if isinstance(v, str))))
    if not readonly.enabled():
        return folders
    kept = read_json_or_none(Path(run_dir) / readonly.RUN_RECORD, log=lambda s: None)
    if isinstance(kept, dict) and isinstance(kept.get("models"), list):
        return [f for f in folders if f in kept["models"]]
    return folders


# ----------------------------------------------------------------------------- atomic I/O
# atomic writes live in dwt_lib.core.io (every layer uses them).


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a damaged file raises :class:`DamagedFileError` naming it."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        why = "empty file" if not text.strip() else f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        raise DamagedFileError(why, path, "delete it (a rerun writes it again)") from None


def read_json_or_none(path: Path, log: Callable[[str], None] = print) -> Any:
    """:func:`read_json`, or None when the file is missing or damaged (said through ``log``)."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except DamagedFileError as e:
        log(f"[dwt] {path} is damaged ({e.what}); ignoring it")
        return None


def read_log(path: Path) -> list[dict]:
    """The records of a run's ``log.jsonl`` (none when it is missing). A line that is not a JSON object (a log cut
    short or edited) raises :class:`DamagedFileError` naming the file and the line, not a bare JSONDecodeError."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, ln in enumerate(path.read_text().splitlines(), 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            rec = e
        if not isinstance(rec, dict):
            raise DamagedFileError(f"training log line {i} is not a JSON object (cut short?)", path,
                                   f"restore the file, or delete the run's folder {path.parent} and rerun to train it "
                                   f"again (to the same weights)")
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- provenance

def git_commit() -> str:
    """The repo's HEAD commit, with ``+dirty`` when tracked files outside ``outputs/`` changed. Outside git (a copy of the
    working tree on another machine) ``$DWT_GIT_COMMIT`` when set (say where it came from), else ``unknown``."""
    fallback = os.environ.get("DWT_GIT_COMMIT") or "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return fallback
        # Dirty means the code differs from the commit: the committed outputs/ (rewritten by every
        # reproduce) does not count, or every result of a reproduce would call itself dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)outputs"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


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
    """What every result file records: resolved config, its hash, where each data source was read from
    (sample / mirror, stand-in or not / hub: :func:`dwt_lib.data.sources.describe_sources`), git commit,
    versions, the machine (:func:`machine`), wall time."""
    return {"profile": cfg.profile, "config": cfg.to_dict(), "config_hash": cfg.short_hash(),
            "data_sources": describe_sources(cfg),
            "git_commit": git_commit(), "versions": versions(), "machine": machine(), "wall_time_s": wall_time_s,
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
        """A result file that reads back whole (see :func:`check_result`)."""
        return self.result_path.exists() and check_result(self.result_path)[1] is None

    def result(self) -> dict:
        res, why = check_result(self.result_path)
        if why:
            raise DamagedFileError(why, self.result_path, "rerun the command: it finishes the run again")
        return res

    def lock(self) -> FileLock:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.dir) + ".lock")

    @contextlib.contextmanager
    def holding(self, say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)):
        """Hold the run's lock; a process that has to wait says for what, held by whom and since when (read from
        ``<id>.lock.json``, which the holder writes), instead of hanging silently."""
        lock, holder = self.lock(), Path(str(self.dir) + ".lock.json")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            h = read_json_or_none(holder, log=lambda s: None)
            h = h if isinstance(h, dict) else {}
            who = f"process {h.get('pid', '?')} on {h.get('host', '?')}" if h else "another process"
            since = f" since {h['since']}" if h.get("since") else ""
            say(f"[dwt] waiting for run {self.name} ({self.id}): {who} has been working on it{since} "
                f"(lock {lock.lock_file}); this process continues when that one finishes "
                f"(waiting since {time.strftime('%Y-%m-%d %H:%M:%S')})")
            lock.acquire()
        try:
            with contextlib.suppress(OSError):
                atomic_write_json(holder, {"pid": os.getpid(), "host": socket.gethostname(),
                                           "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv[:6]})
            yield
        finally:
            with contextlib.suppress(OSError):
                holder.unlink()
            lock.release()


def check_result(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """``(result, None)`` for a whole result file, ``(None, why)`` for a damaged or incomplete one."""
    try:
        res = read_json(path)
    except DamagedFileError as e:
        return None, e.what
    except FileNotFoundError:
        return None, "missing"
    if not isinstance(res, dict):
        return None, f"not a JSON object ({type(res).__name__})"
    missing = [k for k in ("run", "provenance") if k not in res]
    return (None, f"incomplete: no {' or '.join(missing)}") if missing else (res, None)


def _interrupted(run: Run) -> Interrupted:
    """Ctrl-C during a run: one line with the step reached, the checkpoint, and how to resume."""
    prog = read_json_or_none(run.dir / "progress.json", log=lambda s: None) or {}
    prog["step"] = step_of(run.dir / "checkpoints")
    logged = [ln for ln in (run.dir / "log.jsonl").read_text().splitlines() if ln.endswith("}")] \
        if (run.dir / "log.jsonl").exists() else []
    at = f" at step {json.loads(logged[-1])['step']}" if logged else ""
    total = f" of {prog['total_steps']}" if "total_steps" in prog else ""
    resume = (f"resume from its checkpoint of step {prog['step']}" if prog.get("step")
              else "run it again" + (" from step 0" if run.kind != "finetune" else ""))
    return Interrupted(f"interrupted{at}{total} in run {run.name} ({run.dir}); rerun the same command to {resume} "
                       f"(finished runs are kept)")


def ensure(run: Run, cfg: Config, train: Callable[[Run], dict], log: Callable[[str], None] = print,
           check: Optional[Callable[[Run, dict], Optional[str]]] = None) -> dict:
    """Return the run's result, training it first when it is not finished.

    ``train(run)`` does (or resumes) the work inside ``run.dir`` and returns the result
    payload; it is called under the run's lock, so a second process asking for the same
    run waits and then reads the result instead of training it again.

    Self-healing: a damaged or incomplete ``result.json`` is moved aside as
    ``result.json.damaged`` and the run is finished again (``train`` resumes from its last
    intact checkpoint, so this recomputes the result without retraining); ``check(run, result)``
    may name something else a finished run lacks (e.g. its saved model), which is redone the same way.
    """
    def usable() -> tuple[Optional[dict], Optional[str]]:
        if not run.result_path.exists():
            return None, None
        res, why = check_result(run.result_path)
        if why is None and check is not None:
            why = check(run, res)
            return (None, why) if why else (res, None)
        return res, why

    res, why = usable()
    if res is not None:
        return res
    if readonly.enabled():                         # nothing is trained, resumed or healed: the export is as it was
        state = (f"is in the exported registry but {why}" if why else
                 "is not finished in the exported registry" if run.dir.is_dir() else "is not in the exported registry")
        raise ReadOnlyError(f"read-only mode: run {run.name} ({run.id}) {state}", run.dir, readonly.fix(cfg.profile))
    with run.holding():
        res, why = usable()
        if res is not None:         # another process finished it while we waited
            return res
        run.dir.mkdir(parents=True, exist_ok=True)
        if why:
            redo = "running it again" if run.kind == "finetune" else "finishing it again from its last checkpoint"
            if check_result(run.result_path)[1] is not None:
                aside = move_aside(run.result_path)
                log(f"[dwt] {run.result_path} is damaged ({why}); moved aside as {aside.name}, {redo}")
            else:
                log(f"[dwt] {run.name} ({run.id}) is finished but {why}; {redo}")
        if not isinstance(read_json_or_none(run.dir / "run.json", log), dict):
            atomic_write_json(run.dir / "run.json", {"kind": run.kind, "name": run.name, "id": run.id,
                                                     "key": run.key, "profile": cfg.profile})
        state = "resuming" if (run.dir / "checkpoints").exists() else "starting"
        if not why:
            log(f"[dwt] {state} {run.name} ({run.id})")
        t0 = time.time()
        try:
            payload = train(run)
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise _interrupted(run) from None
        payload.setdefault("run", {"kind": run.kind, "name": run.name, "id": run.id, "key": run.key})
        return write_result(run.result_path, cfg, payload, wall_time_s=time.time() - t0)


def _status(d: Path, meta: dict, checksums: bool = False) -> dict:
    if (d / "result.json").exists():
        res, why = check_result(d / "result.json")
        if why:
            return {"status": f"damaged: result.json {why}"}
        folders = model_folders(d, res)
        # by default files, sizes and weight headers only: a listing must not read every weight file (at paper
        # scale tens of GB per call); the sha256 is checked where a dependent run reads a model
        why = integrity.folders_problem(d, folders, checksums) if meta.get("kind") != "finetune" else None
        if why:                                  # deleted, cut short or overwritten since it was saved
            return {"status": f"damaged: {why}", "wall_time_s": res["provenance"].get("wall_time_s")}
        return {"status": "finished", "progress": 1.0, "wall_time_s": res["provenance"].get("wall_time_s")}
    if (d / "progress.json").exists():
        try:
            p = read_json(d / "progress.json")
            return {"status": "partial", "progress": p.get("step", 0) / max(p.get("total_steps", 1), 1),
                    "wall_time_s": p.get("elapsed_s")}
        except (DamagedFileError, AttributeError, TypeError) as e:
            return {"status": f"damaged: progress.json {getattr(e, 'what', 'not a JSON object')}"}
    return {}


def list_runs(cfg: Config, checksums: bool = False) -> list[dict]:
    """Every run folder of the profile with status (finished / partial / new / ``damaged: <reason>``),
    progress and wall time. A damaged run is listed as such; the others are listed as usual. Saved models are
    checked by files, sizes and weight headers; ``checksums``: by their sha256 too (reads every weight file)."""
    rows = []
    for d in sorted((registry_root(cfg) / "runs").glob("*-*")):
        if not d.is_dir() or not (d / "run.json").exists():
            continue
        row = {"id": d.name, "name": None, "kind": d.name.split("-")[0], "status": "new", "progress": 0.0,
               "wall_time_s": None}
        try:
            meta = read_json(d / "run.json")
            if not isinstance(meta, dict):
                raise DamagedFileError(f"not a JSON object ({type(meta).__name__})", d / "run.json")
        except DamagedFileError as e:
            row["status"] = f"damaged: run.json {e.what}"
            rows.append(row)
            continue
        row.update(name=meta.get("name"), kind=meta.get("kind", row["kind"]))
        row.update(_status(d, meta, checksums))
        rows.append(row)
    return rows


def format_runs(rows: list[dict]) -> str:
    """A plain-text table of :func:`list_runs` rows (a damaged run's reason last, on its line)."""
    if not rows:
        return "(no runs)"
    lines = [f"{'id':<22} {'name':<28} {'status':<9} {'progress':>8} {'wall':>8}"]
    for r in rows:
        wall = f"{r['wall_time_s']:.0f}s" if r["wall_time_s"] is not None else "-"
        status, reason = (r["status"], "") if not r["status"].startswith("damaged") else ("damaged", r["status"])
        lines.append(f"{r['id']:<22} {str(r['name']):<28} {status:<9} {r['progress']:>8.0%} {wall:>8}"
                     + (f"  {reason}" if reason else ""))
    return "\n".join(lines)
