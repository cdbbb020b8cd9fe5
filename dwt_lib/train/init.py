"""Step 0 of a pre-training run and the model folders it reads and writes: the frozen teacher, the student's
starting weights (random, remapped from the teacher, or grown from it, notebook 06) or the label-smoothed target
that stands in for a teacher, and the one way a model is saved (a temp folder with a sha256 record, renamed)."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch

from dwt_lib.core.errors import DiskFullError, disk_full
from dwt_lib.core.io import atomic_write_json
from dwt_lib.data.masking import EVAL_MASK_SEED, mask_tokens
from dwt_lib.models import growth, remap
from dwt_lib.models.encoder import SparseMLM, count_parameters, use_device_attention
from dwt_lib.models.targets import SmoothedTarget
from dwt_lib.runs import integrity


def load_teacher(path: Path, vocab_size: int, student_params: int, device) -> torch.nn.Module:
    """A frozen pre-trained teacher (either architecture, as saved): eval mode, no gradients. Vocabulary must
    match the student's."""
    from transformers import AutoModelForMaskedLM     # here: only a run with a teacher needs it
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"teacher model not found at {path}: pre-train the teacher run first")
    teacher = AutoModelForMaskedLM.from_pretrained(path)
    if teacher.config.vocab_size != vocab_size:
        raise ValueError(f"teacher vocabulary ({teacher.config.vocab_size}) differs from the student's "
                         f"({vocab_size}): DWT needs one shared tokenizer")
    if count_parameters(teacher) > student_params:
        warnings.warn(f"teacher ({count_parameters(teacher):,} params) is larger than the student "
                      f"({student_params:,}): this is ordinary KD, not distillation from a weak teacher")
    teacher.eval().requires_grad_(False)
    return teacher.to(device)


def save_model(model, tokenizer, path: Path) -> None:
    """``save_pretrained`` into a temp folder with a sha256 record of its files (:mod:`dwt_lib.runs.integrity`), then
    rename: a kill never leaves half a model."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        integrity.record(tmp)              # sha256 of every file, checked before a dependent run reads it
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(e):
            raise DiskFullError("disk full while saving a model", path,
                                "free space (or set DWT_OUTPUTS_DIR to a larger disk) and rerun: it resumes") from e
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def grow_student(teacher, student, out, data, tokenizer, mlm_probability: float, save: bool) -> growth.Gates:
    """What a ``grow`` run does at step 0 (:func:`dwt_lib.train.pretrain.train`): grow ``student`` from ``teacher``,
    measure :func:`dwt_lib.models.growth.function_gap` on 8 held-out blocks (masked as in evaluation) and, with ``save``, write
    ``grow_report.json`` (sources, new layers, the gap) and the initial weights ``init/`` beside the run."""
    gates, report = growth.grow(teacher, student)
    if save:
        device = next(teacher.parameters()).device
        student.to(device)
        use_device_attention(student, device)
        ids, _ = mask_tokens(data.validation[:8], tokenizer, mlm_probability,
                             torch.Generator().manual_seed(EVAL_MASK_SEED))
        ids = ids.to(device)
        report["function_gap"] = growth.function_gap(teacher, student, ids, ids != tokenizer.pad_token_id)
        report["function_gap_blocks"] = int(len(ids))
        atomic_write_json(out / "grow_report.json", report)
        save_model(student, None, out / "init")
    return gates


def initialise(run, mlm, data, tok, mlm_probability: float, device, main: bool):
    """The teacher (a frozen :class:`SparseMLM`, a :class:`SmoothedTarget` or None) and the gates of grown layers
    (or None) of ``run``; ``mlm`` is set to its starting point: random as built, remapped from the teacher
    (:func:`dwt_lib.models.remap.remap_parameters`) or grown from it. The main process saves that starting point
    (``init/`` and its report) once."""
    key, out = run.key, run.dir
    teacher, gates = None, None
    first = main and not (out / "init").exists()
    if key.get("teacher"):
        teacher = SparseMLM(load_teacher(run.root / "runs" / key["teacher"] / "model", len(tok),
                                         count_parameters(mlm), device))
        use_device_attention(teacher, device)      # CPU: bf16 matmuls + fp32 softmax, not SDPA flash
        if key.get("init") == "remap":
            report = remap.remap_parameters(teacher.mlm, mlm)     # through the module: a test spies on it
            if first:                                          # the starting point, for the remap check
                atomic_write_json(out / "remap_report.json", report.to_dict())
                save_model(mlm, None, out / "init")
        elif key.get("init") == "grow":
            gates = grow_student(teacher.mlm, mlm, out, data, tok, mlm_probability, save=first)
    elif key.get("target"):                      # notebook 06: label-smoothed targets instead of a teacher
        teacher = SmoothedTarget(len(tok), key["target"]["epsilon"])
    if key.get("init", "random") != "random" and not key.get("teacher"):
        raise ValueError(f"run {run.name}: init {key['init']!r} needs a teacher")
    return teacher, gates
