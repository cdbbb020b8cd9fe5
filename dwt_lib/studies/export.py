"""``dwt export``: a profile's registry without checkpoints, for read-only mode (:mod:`dwt_lib.core.readonly`).

The export (``<outputs>/<profile>/registry/``, tracked by git) holds what the studies and notebooks read, so that
a fresh clone re-executes them with no mirror and nothing to train:

- ``runs/<id>/``: every finished run's small files (``run.json``, ``config.json``, ``result.json``, ``log.jsonl``,
  ``progress.json``, a remap or growth report), plus ``export.json`` naming the saved models kept. No
  checkpoints, snapshots or models, except the ones a notebook loads (:func:`loaded_models`): the weak teacher
  (notebooks 02 and 03), the remapping teacher and the remapped student's step-0 weights (05's remap check), a
  growth arm's teacher (06). Each keeps its ``sha256.json``, checked when read.
- ``data-<hash>/``: the processed data, a copy of the cache entry with its own checksums (notebooks 01-06 mask
  real blocks and 01 shows the statistics).
- ``manifest.json``: the runs, where each source was read from at export (the run ids hash it), GLUE's split
  sizes (notebook 01), the size of the export.

The export is built in a temporary folder beside its place and renamed into it, so a reader sees the old export or
the new one, never half of one.
"""
from __future__ import annotations

import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Callable, Optional

from dwt_lib.config.schema import Config
from dwt_lib.core import readonly
from dwt_lib.core.errors import DamagedFileError, ReadOnlyError, UnknownNameError
from dwt_lib.core.io import atomic_write_json
from dwt_lib.data import cache as datacache
from dwt_lib.data.glue import glue_table
from dwt_lib.data.prepare import cache_path, prepare_pretraining_data
from dwt_lib.data.sources import describe_sources
from dwt_lib.runs import integrity
from dwt_lib.runs.registry import check_result, git_commit, outputs_dir, read_json_or_none
from dwt_lib.studies.identity import named_run, study_runs, teacher_name


def loaded_models(cfg: Config) -> dict[str, list[str]]:
    """The saved model folders the notebooks and studies load, by run name: the weak teacher (02's prediction, 03's
    step by hand), the remapping teacher and ``init/`` of its remapped student (05, the remap check), the teacher
    of each growth arm (06)."""
    role = cfg.studies.param_remap_teacher
    out = {"teacher-weak": ["model"], f"teacher-{role}": ["model"], f"remap-{role}": ["init"]}
    for name in study_runs(cfg, "beyond") if cfg.studies.beyond else []:
        if named_run(cfg, name).key.get("init") == "grow" and teacher_name(cfg, name):
            out[teacher_name(cfg, name)] = ["model"]
    return out


def _small_files(run_dir: Path) -> list[Path]:
    """A run's own files (not its folders), without locks and files set aside as damaged."""
    return [f for f in sorted(run_dir.iterdir()) if f.is_file() and ".lock" not in f.name
            and ".damaged" not in f.name and not f.name.endswith(".tmp")]


def folder_size(folder: Path) -> tuple[int, int, int]:
    """(files, bytes, bytes after zlib, about what git stores) of every file under ``folder``."""
    n = raw = packed = 0
    for p in Path(folder).rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            n, raw, packed = n + 1, raw + len(data), packed + len(zlib.compress(data, 6))
    return n, raw, packed


def export_registry(cfg: Config, dest: Optional[Path] = None, log: Callable[[str], None] = print) -> dict:
    """Export ``cfg``'s registry (``<outputs>/<profile>/runs``) to ``dest`` (default
    :func:`~dwt_lib.core.readonly.export_dir`), replacing an earlier export; returns its manifest. Builds the
    processed data first when it is not in the cache (that needs the data)."""
    if readonly.enabled():
        raise ReadOnlyError("dwt export reads the ordinary registry, and read-only mode is on", readonly.ENV,
                            f"unset {readonly.ENV}")
    src = outputs_dir(cfg) / "runs"
    if not src.is_dir():
        raise UnknownNameError(f"profile {cfg.profile} has no runs to export", src,
                               f"run `dwt reproduce --profile {cfg.profile}` first (or set DWT_OUTPUTS_DIR)")
    dest = Path(dest) if dest else readonly.export_dir(cfg.profile)
    keep = {}
    for name, folders in loaded_models(cfg).items():
        keep.setdefault(named_run(cfg, name).id, (name, []))[1].extend(folders)
    t0 = time.time()
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "runs").mkdir(parents=True)
    try:
        runs = {}
        for d in sorted(src.glob("*-*")):
            meta = read_json_or_none(d / "run.json", log=lambda s: None) if d.is_dir() else None
            if not isinstance(meta, dict) or check_result(d / "result.json")[1] is not None:
                continue                                   # unfinished or damaged: nothing a study could read
            out = tmp / "runs" / d.name
            out.mkdir()
            for f in _small_files(d):
                shutil.copy2(f, out / f.name)
            models = []
            for rel in keep.get(d.name, ("", []))[1]:
                why = integrity.problem(d / rel)          # a damaged model is not exported as if it were whole
                if why:
                    raise DamagedFileError(f"run {meta.get('name')}'s {rel}/ cannot be exported ({why})", d / rel,
                                           f"rerun `dwt pretrain --profile {cfg.profile} --run {meta.get('name')}`: "
                                           f"it restores the model; then export again")
                shutil.copytree(d / rel, out / rel)
                models.append(rel)
            if meta.get("kind") != "finetune":
                atomic_write_json(out / readonly.RUN_RECORD, {"models": models})
            runs[d.name] = {"name": meta.get("name"), "kind": meta.get("kind"), "models": models}
        missing = [f"{name} ({rid})" for rid, (name, _) in keep.items() if rid not in runs]
        if missing:
            log(f"[dwt] export: not finished in {src}, so not exported: {', '.join(missing)} (the notebooks that "
                f"load them will say so in read-only mode)")

        data = cache_path(cfg.data)
        if datacache.verify(data) is not None:
            data = prepare_pretraining_data(cfg).cache_dir      # builds it (reads the data) when missing
        shutil.copytree(data, tmp / data.name)
        why = datacache.verify(tmp / data.name)
        if why:
            raise DamagedFileError(f"the copy of the processed data does not verify ({why})", tmp / data.name,
                                   "export again")
        try:
            glue = glue_table(cfg).to_dict("records")
        except Exception as e:                           # the sizes are shown by notebook 01 only
            log(f"[dwt] export: GLUE split sizes not recorded ({type(e).__name__}: {e})")
            glue = None
        n, raw, packed = folder_size(tmp)
        man = {"version": 1, "profile": cfg.profile, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "git_commit": git_commit(), "data": data.name, "sources": describe_sources(cfg),
               "glue": glue, "runs": runs, "models": {rid: name for rid, (name, _) in keep.items() if rid in runs},
               "size": {"files": n + 1, "bytes": raw, "zlib_bytes": packed}}
        atomic_write_json(tmp / readonly.MANIFEST, man)
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[dwt] exported {len(runs)} finished runs of profile {cfg.profile} to {dest}: {n + 1} files, "
        f"{raw / 1e6:.1f} MB ({packed / 1e6:.1f} MB compressed, about what git stores) in {time.time() - t0:.0f} s")
    return man
