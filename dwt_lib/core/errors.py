"""Expected failures, and how the command line reports them: one line, exit code 2.

Every error a user can cause or fix (a bad params file, a missing dataset, an unknown run
name, a read-only or full disk, a damaged file that could not be healed, Ctrl-C) prints

    dwt: <what went wrong> (<file / key / id>); <how to fix it>

and exits with 2. Anything else is a bug and keeps its traceback. ``--debug`` (or
``DWT_DEBUG=1``) shows the traceback for expected errors too. The table :data:`HINTS` maps an
exception type to its fix, like pip's ``_run_wrapper`` and huggingface_hub's ``cli/_errors.py``.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import traceback
from typing import Optional

EXIT_ERROR = 2


class DwtError(Exception):
    """An expected failure: ``what`` went wrong, ``where`` (a file, key or id) and the ``fix``."""

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, str(where), fix
        super().__init__(self.line())

    def line(self) -> str:
        s = self.what + (f" ({self.where})" if self.where else "")
        return s + (f"; {self.fix}" if self.fix else "")


class DamagedFileError(DwtError):
    """A file the project wrote cannot be read back (truncated, empty, wrong checksum)."""


class DiskFullError(DwtError, OSError):
    """The disk filled up while writing; nothing partial is left behind."""


class UnknownNameError(DwtError, ValueError):
    """An unknown run name, study or snapshot fraction."""


class UnknownTaskError(DwtError, KeyError):
    """An unknown GLUE task name."""

    def __str__(self) -> str:           # KeyError would print the message in quotes
        return self.line()


class PreflightError(DwtError):
    """A check made before any work failed (data not readable, outputs not writable, no room)."""


class ReadOnlyError(DwtError):
    """Read-only mode (``DWT_READ_ONLY=1``) was asked for something the exported registry does not hold: a run,
    its data or the export itself (:mod:`dwt_lib.core.readonly`)."""


class ConfigError(ValueError):
    """A params file (or an override) is invalid; the message names file and key path."""


class DataSourceError(RuntimeError):
    """A dataset or tokenizer is neither in the sample, nor in the local mirror, nor reachable on the Hub."""


class CorpusError(ValueError):
    """A corpus that cannot be used as configured (missing column, no documents)."""


class SizeError(ValueError):
    """A size in a profile is invalid; ``key`` is the offending key inside the size ('' for the size)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class ScheduleError(ValueError):
    """A schedule spec is malformed; the message says what a valid spec looks like."""


class NodeError(DwtError):
    """Another node did not start, cannot see the shared folders, or stopped answering."""


class NonFiniteLossError(DwtError, FloatingPointError):
    """The training loss became NaN or inf (pre-training or fine-tuning); the message names the run, the step and
    a fix that is true for that run (nothing of it is recorded as a result)."""


def diverged_fix(section: str, lr: float, precision: str, task: str = "") -> str:
    """The fix a non-finite loss gets: true for pre-training and fine-tuning alike (a lower lr is another run,
    trained from its start; a rerun with the same settings stops at the same step)."""
    key = f"{section}.lr_per_task.{task}" if task else f"{section}.lr"
    fp32 = f" or set {section}.precision=fp32" if precision == "bf16" else ""
    return (f"lower the learning rate (now {lr:g}; e.g. --set {key}={lr / 10:g}){fp32}: that is another run, "
            f"trained from its start (the same settings stop at the same step again)")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where it stopped and how to resume."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is the OS saying the disk is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _config(e) -> str:
    msg = str(e)
    return msg if ";" in msg else f"{msg}; fix the params file or the --set value"


def _data(e) -> str:
    msg = str(e)
    return msg if ";" in msg else f"{msg}; check DWT_DATA_DIR and the profile's data sources"


def _perm(e) -> str:
    where = e.filename or "a file under the outputs folder"
    return (f"permission denied ({where}); make the folder writable or set DWT_OUTPUTS_DIR "
            f"to a folder you can write")


def _oserror(e) -> Optional[str]:
    if disk_full(e):
        where = getattr(e, "filename", None) or "the outputs folder"
        return f"disk full ({where}); free space (or set DWT_OUTPUTS_DIR to a larger disk) and rerun: it resumes"
    return None


def _worker(e) -> str:
    return (f"a training worker failed (exit code {e.returncode}); its error is printed above, "
            f"fix it and rerun (the run resumes)")


def message(exc: BaseException) -> Optional[str]:
    """The one line for an expected error (without the ``dwt: `` prefix), or None for a bug."""
    if isinstance(exc, Interrupted):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; rerun the same command to continue (finished runs are kept, unfinished ones resume)"
    if isinstance(exc, DwtError):
        return exc.line()
    table = [(ConfigError, _config), (DataSourceError, _data), (CorpusError, _data), (PermissionError, _perm),
             (OSError, _oserror), (subprocess.CalledProcessError, _worker)]
    for tp, fn in table:
        if isinstance(exc, tp):
            return fn(exc)
    return None


def report(exc: BaseException, debug: bool = False, stream=None) -> int:
    """Print ``exc`` as the CLI does and return the exit code; re-raise bugs (traceback, exit 1)."""
    stream = stream or sys.stderr
    msg = message(exc)
    if msg is None:
        raise exc
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    line = " ".join(msg.split())                 # one line, whatever the message held
    print(f"dwt: {line}", file=stream)
    return EXIT_ERROR


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get("DWT_DEBUG", "").lower() in ("1", "true", "yes", "on")
