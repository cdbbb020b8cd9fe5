"""The folders the project reads and writes, from the environment, as absolute paths.

``DWT_OUTPUTS_DIR`` (default ``<repo>/outputs``), ``DWT_CACHE_DIR`` (default ``<outputs>/.cache``) and
``DWT_DATA_DIR`` (default ``<repo>/data``) may be relative: they are resolved against the directory the command
started in, once (:func:`pin_environment`, called by the CLI before any work), and the absolute paths are put
back into the environment, so that a notebook kernel started by papermill in ``notebooks/`` and an
``accelerate launch``ed worker see the same folders as the command (a relative ``DWT_OUTPUTS_DIR=relout`` once
put executed notebooks under ``./relout`` and figures, results and the cache under ``notebooks/relout``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

PACKAGE = Path(__file__).resolve().parent.parent          # dwt_lib/ (this file is dwt_lib/core/paths.py)
REPO = PACKAGE.parent                                      # the one repository root every folder below hangs from
PARAMS_DIR = REPO / "params"
SAMPLE_DIR = PACKAGE / "sample_data"
FOLDERS = ("DWT_OUTPUTS_DIR", "DWT_CACHE_DIR", "DWT_DATA_DIR")


def env_dir(var: str, default: Optional[Path] = None) -> Optional[Path]:
    """``$var`` as an absolute path (``~`` expanded; relative to the current directory), else ``default``;
    an empty value counts as unset."""
    value = os.environ.get(var, "").strip()
    if not value:
        return default
    return Path(os.path.abspath(os.path.expanduser(value)))


def outputs_root() -> Path:
    """``$DWT_OUTPUTS_DIR``, default ``<repo>/outputs`` (a profile's outputs are ``<root>/<profile>``)."""
    return env_dir("DWT_OUTPUTS_DIR", REPO / "outputs")


def cache_root() -> Path:
    """Root of processed-data caches: ``$DWT_CACHE_DIR``, else ``<outputs root>/.cache``."""
    return env_dir("DWT_CACHE_DIR") or outputs_root() / ".cache"


def data_root() -> Path:
    """The offline mirror root: ``$DWT_DATA_DIR``, default ``<repo>/data``."""
    return env_dir("DWT_DATA_DIR", REPO / "data")


def pin_environment() -> dict:
    """Rewrite each set folder variable as an absolute path (resolved now, against the current directory), so
    every process started from here reads the same folders whatever its own working directory. Returns them."""
    out = {}
    for var in FOLDERS:
        p = env_dir(var)
        if p is not None:
            os.environ[var] = out[var] = str(p)
    return out
