"""``dwt reproduce``: execute every notebook in order with papermill for one profile.

Executed copies go to ``outputs/<profile>/notebooks/``; the notebooks write figures to
``outputs/<profile>/figures/`` and results to ``outputs/<profile>/results/``. Runs finished
by an earlier call are reused, so a second call trains nothing. A failing cell stops the
reproduction with a non-zero exit that names the notebook and the cell. Notebooks get
``interactive = False``: their JupyterLab widgets (:mod:`dwt_lib.notebook.explore`) draw static defaults instead.

``read_only`` (``dwt reproduce --read-only``) sets ``DWT_READ_ONLY=1`` for the kernels: the notebooks read the
exported registry (:mod:`dwt_lib.core.readonly`), with no mirror and nothing trained; ``export`` writes that
export at the end (:mod:`dwt_lib.studies.export`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from dwt_lib.core import readonly
from dwt_lib.core.paths import PARAMS_DIR
from dwt_lib.config.load import load_params, resolve_params_path
from dwt_lib.core.errors import Interrupted, UnknownNameError
from dwt_lib.core.paths import pin_environment
from dwt_lib.core.paths import REPO
from dwt_lib.runs.registry import outputs_dir
from dwt_lib.studies.export import export_registry
from dwt_lib.studies.identity import check_device
from dwt_lib.studies.preflight import check_all

NOTEBOOKS = REPO / "notebooks"


def notebooks(only: Optional[list[str]] = None) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose names start with a prefix in ``only``."""
    nbs = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.name.startswith(o) for o in only)]
    return nbs


def notebook_profile(profile: str) -> str:
    """What the notebooks' ``profile`` parameter gets: a profile's name as is, a path as an absolute path (the
    kernel runs in ``notebooks/``, where a relative ``params/mine.yaml`` names nothing)."""
    path = resolve_params_path(profile)
    if str(profile) == path.stem and path.resolve().parent == PARAMS_DIR.resolve():
        return str(profile)
    return str(path.resolve())


def kernel_manager(log: Path) -> type:
    """An ``AsyncKernelManager`` whose kernel writes its own stderr to ``log`` (appended), not to the terminal: on
    Ctrl-C the kernel, losing its sockets while it shuts down, printed a ``ZMQError`` traceback above the one
    ``dwt:`` line; its start-up warnings went there too. Cell outputs and errors are in the executed notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_start_kernel(self, **kw):
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as f:               # the kernel keeps its own descriptor of the file
                kw.setdefault("stderr", f)
                return await super()._async_start_kernel(**kw)

        start_kernel = _async_start_kernel

    return LoggedKernelManager


@contextlib.contextmanager
def quiet_after_interrupt():
    """After a Ctrl-C, nothing more from papermill's and asyncio's loggers: while it unwinds, the kernel it stops
    is reported as "Kernel died" and its pending cell as "Task exception was never retrieved" (a traceback), above
    the one ``dwt:`` line that says what happened. Before a Ctrl-C (a kernel that really dies) they speak as usual."""
    hit = threading.Event()
    keep = lambda record: not hit.is_set()           # noqa: E731
    loggers = [logging.getLogger(n) for n in ("papermill", "asyncio", "traitlets")]
    main = threading.current_thread() is threading.main_thread()
    prev = signal.getsignal(signal.SIGINT) if main else None

    def on_sigint(signum, frame):
        hit.set()
        raise KeyboardInterrupt

    for lg in loggers:
        lg.addFilter(keep)
    if main and prev is signal.default_int_handler:   # not where SIGINT is ignored (nohup, a background job)
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield hit
    except KeyboardInterrupt:
        hit.set()
        raise
    finally:
        if main and prev is signal.default_int_handler:
            signal.signal(signal.SIGINT, prev)
        # the asyncio task is collected (and would be reported) later: the filters stay once a Ctrl-C came
        if not hit.is_set():
            for lg in loggers:
                lg.removeFilter(keep)


def reproduce(profile: str, only: Optional[list[str]] = None, overrides: Optional[dict] = None,
              read_only: bool = False, export: bool = False) -> int:
    """Run the notebooks for ``profile`` (a name or a YAML path); return a process exit code. ``read_only``: from
    the exported registry, training nothing (also ``DWT_READ_ONLY=1``); ``export``: export the registry at the end."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    pin_environment()                              # relative DWT_*_DIR: resolved here, not in notebooks/
    if read_only:
        os.environ[readonly.ENV] = "1"             # the kernels inherit it
    profile = notebook_profile(profile)
    cfg = load_params(profile, overrides)          # fail on a bad profile before starting a kernel
    if readonly.enabled():
        if export:
            raise UnknownNameError("--export writes the export from the ordinary registry; --read-only reads it",
                                   "--export / --read-only", "use one of the two")
        check_all(cfg)                             # names, and that the export exists
    else:
        check_device(cfg)                          # and on a GPU profile without a GPU
        check_all(cfg)                             # and on unreadable data, names, disk, before any run
    out = outputs_dir(cfg) / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    nbs = notebooks(only)
    if not nbs:
        raise UnknownNameError(f"no notebook matches {','.join(only or [])}", "--notebooks",
                               f"use prefixes of {', '.join(p.name for p in notebooks())}, e.g. 01,03")
    t_all = time.time()
    for i, nb in enumerate(nbs, 1):
        print(f"[{i}/{len(nbs)}] {nb.name} (profile {cfg.profile})", flush=True)
        t0 = time.time()
        log = outputs_dir(cfg) / "runs" / ".kernels" / f"{nb.stem}.log"      # ignored by git, like the runs
        try:
            with quiet_after_interrupt():
                pm.execute_notebook(str(nb), str(out / nb.name), kernel_name="python3", progress_bar=True,
                                    parameters={"profile": str(profile), "overrides": dict(overrides or {}),
                                                "interactive": False},   # static figures, no widgets
                                    cwd=str(NOTEBOOKS), kernel_manager_class=kernel_manager(log))
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted in {nb.name} (notebook {i} of {len(nbs)}); rerun the same command to "
                              f"continue (finished runs are kept, unfinished ones resume from their last "
                              f"checkpoint; the kernel's messages are in {log})") from None
        except PapermillExecutionError as e:
            print(f"dwt reproduce: {nb.name} failed at cell {e.exec_count} ({e.ename}: {e.evalue}); "
                  f"the executed copy with the traceback is {out / nb.name} (the kernel's own messages: {log})",
                  file=sys.stderr)
            return 1
        print(f"    done in {time.time() - t0:.0f} s -> {out / nb.name}", flush=True)
    mode = " read-only, from the exported registry" if readonly.enabled() else ""
    print(f"reproduced {len(nbs)} notebooks for profile {cfg.profile}{mode} in {time.time() - t_all:.0f} s; "
          f"figures in {outputs_dir(cfg) / 'figures'}")
    if export:
        export_registry(cfg)
    return 0
