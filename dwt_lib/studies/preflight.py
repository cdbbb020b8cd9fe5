"""Checks made before any work, so that a bad setting fails in seconds, not after hours of pre-training.

:func:`check` is called by ``dwt pretrain | finetune | study | reproduce`` and by the studies'
library functions before their first training step. It checks that every run name, GLUE task
and snapshot fraction is known, that every GLUE task and split the fine-tuning will read can be
read from the configured source (the offline mirror has no MNLI, QQP or QNLI train), that the
outputs folder is writable, and that its disk has room for the checkpoints and models of the runs
still to train (:func:`run_disk_bytes`, also shown by ``dwt plan``). Each failure raises one
:class:`~dwt_lib.core.errors.DwtError` that names the problem and the fix. In read-only mode nothing will be
trained or read from the data, so only the names and the export's presence are checked.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from dwt_lib.config.schema import Config
from dwt_lib.core import readonly
from dwt_lib.data.tokens import vocab_size
from dwt_lib.core.errors import PreflightError, UnknownNameError
from dwt_lib.models.encoder import build_model, count_parameters, model_kwargs
from dwt_lib.core.paths import cache_root, data_root, env_dir
from dwt_lib.runs.registry import outputs_dir
from dwt_lib.config.tasks import get_task
from dwt_lib.data.glue import check_split
from dwt_lib.studies.identity import all_run_names, named_run, pretrained_problem, teacher_name

FP32 = 4
SAVE_COPIES = 3          # last.pt, prev.pt and last.tmp while a save is being verified


def parameters(shape: dict, vocab_size: int, max_position_embeddings: int = 512, arch: str = "bert") -> int:
    """Exact parameter count of a model shape (a run key's ``shape``) of an architecture, built on the meta
    device."""
    import torch
    with torch.device("meta"):
        model = build_model(dict(shape), vocab_size, arch, max_position_embeddings=max_position_embeddings)
    return count_parameters(model)


def run_disk_bytes(cfg: Config, shape: dict) -> int:
    """Disk a pre-training run of model ``shape`` (its key's ``shape``) needs at its peak: weights plus AdamW's two moments in
    each of last/prev/tmp checkpoint, and the fp32 model and snapshots (one extra while saving)."""
    p = parameters(shape, vocab_size(cfg.data), model_kwargs(cfg)["max_position_embeddings"], cfg.model.arch)
    models = 1 + len(cfg.pretrain.snapshot_fractions) + 1
    return p * FP32 * (3 * SAVE_COPIES + models)


def _fractions_known(cfg: Config, fractions: Iterable[float]) -> None:
    have = {f"{f:.2f}" for f in cfg.pretrain.snapshot_fractions}
    for fr in fractions:
        if f"{fr:.2f}" not in have:
            raise UnknownNameError(f"no snapshot at fraction {fr:.2f}", "--fraction / pretrain.snapshot_fractions",
                                   f"use one of {', '.join(sorted(have))} or add it to pretrain.snapshot_fractions")


def _glue_readable(cfg: Config, tasks: Sequence[str]) -> None:
    for task in tasks:
        get_task(task)                          # unknown names first: they need no data
    for task in tasks:
        for split in ("train", "validation"):
            check_split(task, split, cfg.finetune.source)


def _writable(folder: Path, what: str = "the outputs folder", var: str = "DWT_OUTPUTS_DIR") -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PreflightError(f"{what} is not writable ({type(e).__name__}: {e.strerror})", folder,
                             f"make it writable, or set {var} to a folder you can write") from None


def _folders(cfg: Config) -> None:
    """The folders the runs will use, as they will use them: the outputs folder and the data cache written,
    the data folder (when one is set or present) read."""
    _writable(outputs_dir(cfg))
    _writable(cache_root(), "the data cache folder", "DWT_CACHE_DIR")
    data, chosen = data_root(), env_dir("DWT_DATA_DIR")
    if chosen is not None and not chosen.is_dir():
        raise PreflightError("DWT_DATA_DIR is not a folder", chosen,
                             "point it at the mirror's folder, or unset it (default: data/ in the repository)")
    if data.is_dir() and not os.access(data, os.R_OK | os.X_OK):
        raise PreflightError("the data folder is not readable", data,
                             "make it readable (chmod), or set DWT_DATA_DIR to a readable mirror")


def _disk_room(cfg: Config, names: Sequence[str], folder: Path) -> None:
    todo: dict[str, dict] = {}
    stack = list(names)
    while stack:                                # the runs and the teachers they need, unfinished ones
        name = stack.pop()
        run = named_run(cfg, name)
        if run.id in todo or (run.finished() and pretrained_problem(run, run.result()) is None):
            continue
        todo[run.id] = run.key["shape"]
        if teacher_name(cfg, name):
            stack.append(teacher_name(cfg, name))
    if not todo:
        return
    need = sum(run_disk_bytes(cfg, shape) for shape in todo.values())
    free = shutil.disk_usage(folder).free
    if need > free:
        raise PreflightError(f"not enough disk for the checkpoints of {len(todo)} run(s) to train: about "
                             f"{need / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free", folder,
                             "free space, or set DWT_OUTPUTS_DIR to a larger disk (sizes: dwt plan)")


def check(cfg: Config, names: Sequence[str], tasks: Sequence[str] = (), fractions: Sequence[float] = ()) -> None:
    """Everything the runs ``names`` and fine-tuning on ``tasks`` at ``fractions`` need, before any work."""
    for name in names:
        named_run(cfg, name)                    # an unknown run name lists the known ones
    _fractions_known(cfg, fractions)
    if readonly.enabled():                      # no data, no training: the runs are read from the export
        for task in tasks:
            get_task(task)
        readonly.manifest(cfg.profile)          # a clear error when there is no export of this profile
        return
    _glue_readable(cfg, tasks)
    _folders(cfg)
    _disk_room(cfg, names, outputs_dir(cfg))


def check_all(cfg: Config) -> None:
    """:func:`check` for every run, task and snapshot the three studies use (``dwt reproduce``)."""
    check(cfg, all_run_names(cfg), list(cfg.finetune.tasks), list(cfg.pretrain.snapshot_fractions))
