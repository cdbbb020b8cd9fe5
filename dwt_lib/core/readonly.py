"""Read-only mode: the studies and notebooks read a profile's *exported registry* instead of training anything.

``dwt export --profile P`` (:mod:`dwt_lib.studies.export`) copies the small files of every finished run of
``<outputs>/<profile>/runs/`` (``run.json``, ``config.json``, ``result.json``, ``log.jsonl``, ...), the few
saved models the notebooks load, and the processed data, into ``<outputs>/<profile>/registry/``, which git
tracks. With ``DWT_READ_ONLY=1`` (``dwt reproduce --read-only`` sets it for the notebook kernels) the run
registry is that folder (:func:`dwt_lib.runs.registry.registry_root`), the data is its copy, where each corpus was
read from is the one recorded at export, and nothing is trained, prepared or read from the mirror: a run that is
not in the export is a :class:`ReadOnlyError` naming it and the fix. The environment variable, not an argument,
carries the mode, so that a papermill kernel, nbval and a JupyterLab started with it all see it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from dwt_lib.core.errors import DamagedFileError, ReadOnlyError
from dwt_lib.core.paths import outputs_root

ENV = "DWT_READ_ONLY"
FOLDER = "registry"             # <outputs>/<profile>/registry: tracked by git, beside the ignored runs/
MANIFEST = "manifest.json"      # what the export holds: runs, saved models, data, sources, GLUE sizes
RUN_RECORD = "export.json"      # in each exported run folder: which of its saved models were kept


def enabled() -> bool:
    """Whether read-only mode is on (``DWT_READ_ONLY`` = 1 / true / yes / on)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def export_dir(profile: str) -> Path:
    """``<outputs>/<profile>/registry``: where ``dwt export`` writes a profile's registry and read-only mode reads it."""
    return outputs_root() / profile / FOLDER


def fix(profile: str) -> str:
    """What to do when the export lacks something: the same command without read-only mode, where the data is."""
    return (f"run it without --read-only / {ENV}=1, on a machine with the data (mirror or Hub), to train what is "
            f"missing; then `dwt export --profile {profile}` to add it to the export")


_READ: dict[tuple, dict] = {}      # (path, size, mtime) -> manifest: run ids read it once per named run


def manifest(profile: str) -> dict:
    """The export's manifest; a clear :class:`ReadOnlyError` when there is no export of ``profile``."""
    path = export_dir(profile) / MANIFEST
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key in _READ:
            return _READ[key]
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReadOnlyError(f"read-only mode, but profile {profile} has no exported registry", path,
                            fix(profile)) from None
    except (OSError, ValueError) as e:
        raise DamagedFileError(f"the exported registry's manifest does not read ({type(e).__name__})", path,
                               f"restore it from git (git checkout -- {path.parent}), or export again") from None
    if not isinstance(m, dict):
        raise DamagedFileError("the exported registry's manifest is not a JSON object", path,
                               "restore it from git, or export again")
    _READ[key] = m
    return m
