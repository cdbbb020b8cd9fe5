"""Masked-LM pre-training with or without a weak teacher: one explicit Accelerate loop.

The same loop trains a teacher or a student alone (MLM only, paper Eq. 1) and a student with
DWT (Eq. 3: a_h * MLM + a_s(t) * tau(t)^2 * KL(teacher || student)). Read it top to bottom:

1. data: packed blocks from :mod:`dwt_lib.data`; step ``s`` uses a fixed slice of a per-epoch
   permutation and a mask drawn from a generator seeded by ``s``, so a resumed run (and a run
   on more processes with the same global batch) sees exactly the same tokens and masks;
2. model: random init, parameter remapping from the teacher (:mod:`dwt_lib.remap`) or growth
   from it (:mod:`dwt_lib.growth`, notebook 06: gated new layers, the gate a function of the step);
3. the step: encoder on all positions, MLM head only on the selected positions
   (:class:`dwt_lib.models.SparseMLM`), teacher (or notebook 06's label-smoothed target) under
   ``no_grad`` in eval mode; a_s from its schedule, or the teacher-aware weight
   (:class:`dwt_lib.models.targets.TeacherAwareWeight`, whose running means go into every checkpoint);
4. bookkeeping: JSON-lines log, held-out MLM eval, full checkpoints, model snapshots at
   fractions of training, and a stop on the first non-finite loss.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dwt_lib.runs import checkpoints, integrity
from dwt_lib.models.targets import soft_weight
from dwt_lib.runs.checkpoints import rng_state as _rng_state
from dwt_lib.runs.checkpoints import set_rng_state as _set_rng_state
from dwt_lib.runs.checkpoints import truncate_log as _truncate_log
from dwt_lib.config.schema import Config
from dwt_lib.core.errors import ConfigError
from dwt_lib.core.errors import DiskFullError, NonFiniteLossError, disk_full, diverged_fix
from dwt_lib.models.growth import gate_value, ramp_steps
from dwt_lib.models.losses import hard_loss, soft_loss
from dwt_lib.models.encoder import (SparseMLM, build_model, count_parameters, model_kwargs, special_ids, use_device_attention)
from dwt_lib.runs.registry import Run, read_json_or_none
from dwt_lib.core.io import atomic_write_json
from dwt_lib.config.schedules import make_schedule
from dwt_lib.train.steps import (Prefetcher, batch_indices, global_batch, lr_lambda, make_optimizer, snapshot_steps, total_steps)  # noqa: F401

MASK_SEED = 1_000_003      # step s masks with generator seed (pretrain.seed * MASK_SEED + s)
EVAL_MASK_SEED = 7_777     # held-out eval always masks the same way


# ----------------------------------------------------------------------------- pieces

def load_teacher(path: Path, vocab_size: int, student_params: int, device) -> torch.nn.Module:
    """A frozen pre-trained teacher (either architecture, as saved): eval mode, no gradients. Vocabulary must
    match the student's."""
    from transformers import AutoModelForMaskedLM
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
    """``save_pretrained`` into a temp folder with a sha256 record of its files (:mod:`dwt_lib.integrity`), then
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


def _snapshot(out: Path, fraction: float) -> Path:
    return out / "snapshots" / f"frac-{fraction:.2f}"



def dwt_losses(model, teacher, ids, attn, select, y, *, autocast=contextlib.nullcontext, alpha_hard=1.0,
               alpha_soft=1.0, temperature=1.0, scale_by_t2=True, n_hard=None, n_soft=None, extras=None):
    """One micro-batch of Eq. 3: ``(loss, hard, soft)`` for the student ``model`` (a :class:`SparseMLM`).

    The student runs under ``autocast`` with the MLM head on the ``select``ed positions only; the
    teacher (or None) runs the same positions under ``no_grad`` (not ``inference_mode``: its
    outputs meet the student's graph). ``y`` holds the labels of the selected positions (-100
    where the hard loss ignores one). The parts are scaled by ``n_selected / n_hard`` and
    ``n_selected / n_soft`` so that summing micro-batches gives the mean over the global batch's
    ``n_hard`` masked and ``n_soft`` soft-loss tokens; None means this micro-batch is the batch.
    A ``teacher`` with ``uses_labels`` (:class:`dwt_lib.models.targets.SmoothedTarget`) is called with ``y``.
    With an ``extras`` dict, the teacher's own hard loss on the same tokens (same scaling) goes to
    ``extras["teacher_hard"]``: the teacher-aware soft weight compares it with the student's.
    """
    t_logits = None
    if teacher is not None:     # first: its temporaries are freed before the student's activations pile up
        with torch.no_grad(), autocast():
            t_logits = teacher(y) if getattr(teacher, "uses_labels", False) else teacher(ids, attn, select)
    with autocast():
        logits = model(ids, attn, select)
    n_y = int((y != -100).sum())
    h = hard_loss(logits, y) * (n_y / (n_hard or n_y)) if n_y else logits.sum() * 0.0
    if extras is not None and t_logits is not None:
        extras["teacher_hard"] = hard_loss(t_logits, y).detach() * (n_y / (n_hard or n_y)) if n_y else 0.0
    s = torch.zeros((), device=logits.device)
    if teacher is not None:
        s = soft_loss(logits, t_logits, temperature=temperature, scale_by_t2=scale_by_t2) * (
            len(y) / (n_soft or len(y)))
    return alpha_hard * h + alpha_soft * s, h, s


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, blocks: torch.Tensor, tokenizer, cfg: Config, accelerator,
                 autocast) -> dict:
    """Held-out MLM loss and accuracy on masked tokens, the same masks every time."""
    from dwt_lib.data.masking import mask_tokens
    model.eval()
    bs, world, rank = cfg.pretrain.batch_size_per_device, accelerator.num_processes, accelerator.process_index
    n = min(len(blocks), cfg.pretrain.eval_batches * bs * world)
    loss_sum = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device)
    count = torch.zeros((), device=accelerator.device)
    for i, start in enumerate(range(0, n, bs * world)):
        g = torch.Generator().manual_seed(EVAL_MASK_SEED + i)
        ids, labels = mask_tokens(blocks[start:start + bs * world], tokenizer, cfg.data.mlm_probability, g)
        ids, labels = ids[rank * bs:(rank + 1) * bs], labels[rank * bs:(rank + 1) * bs]
        if len(ids) == 0:
            continue
        ids, labels = ids.to(accelerator.device), labels.to(accelerator.device)
        select = labels != -100
        with autocast():
            logits = model(ids, ids != tokenizer.pad_token_id, select)
        y = labels[select]
        loss_sum += hard_loss(logits, y) * len(y)
        correct += (logits.argmax(-1) == y).sum()
        count += len(y)
    loss_sum, correct, count = (accelerator.reduce(t, "sum") for t in (loss_sum, correct, count))
    model.train()
    c = max(count.item(), 1.0)
    # which held-out set: the first eval_blocks blocks (pretrain.eval_batches x batch x processes), masked the same
    return {"mlm_loss": loss_sum.item() / c, "mlm_accuracy": correct.item() / c, "eval_tokens": int(count.item()),
            "eval_blocks": n, "eval_batches": cfg.pretrain.eval_batches}


# ----------------------------------------------------------------------------- the loop

def train(cfg: Config, run: Run, progress: bool = True) -> dict:
    """Pre-train (or resume) the run in ``run.dir``; returns the final metrics.

    ``run.key`` says what to train: ``size``, ``init`` (random | remap), ``teacher`` (a run id or
    None) and, with a teacher, the distillation settings. Works under ``accelerate launch`` with
    any number of processes; the global batch is ``batch_size_per_device x processes x accum``.
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()      # no "Writing model shards" bars inside ours

    from dwt_lib.data.masking import mask_tokens
    from dwt_lib.data.prepare import prepare_pretraining_data

    if cfg.launch.num_threads:
        torch.set_num_threads(cfg.launch.num_threads)
    cpu = cfg.launch.device == "cpu" or (cfg.launch.device == "auto" and not torch.cuda.is_available())
    tb = dict(log_with="tensorboard", project_dir=str(run.dir)) if cfg.launch.tensorboard else {}
    if tb:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ImportError("launch.tensorboard is true but TensorBoard is not installed: "
                              "pip install -e '.[tensorboard]' (or set launch.tensorboard: false)") from None
    acc = Accelerator(cpu=cpu, **tb)
    if tb:
        acc.init_trackers("tensorboard")
    main = acc.is_main_process
    say = (lambda m: print(m, flush=True)) if main else (lambda m: None)
    key, pc, dc = run.key, cfg.pretrain, cfg.distill
    out = run.dir
    ckpt_dir = out / "checkpoints"
    log_path = out / "log.jsonl"

    with acc.main_process_first():
        data = prepare_pretraining_data(cfg)
    tok = data.tokenizer
    vocab = len(tok)
    torch.manual_seed(pc.seed)
    random.seed(pc.seed)
    np.random.seed(pc.seed)
    mlm = build_model(key["shape"], vocab, special_ids=special_ids(tok), **model_kwargs(cfg))
    n_params = count_parameters(mlm)

    teacher, gates = None, None
    if key.get("teacher"):
        teacher_dir = run.root / "runs" / key["teacher"] / "model"
        teacher = SparseMLM(load_teacher(teacher_dir, vocab, n_params, acc.device))
        use_device_attention(teacher, acc.device)      # CPU: bf16 matmuls + fp32 softmax, not SDPA flash
        if key.get("init") == "remap":
            from dwt_lib.models.remap import remap_parameters
            report = remap_parameters(teacher.mlm, mlm)
            if main and not (out / "init").exists():   # the starting point, for the remap check
                atomic_write_json(out / "remap_report.json", report.to_dict())
                save_model(mlm, None, out / "init")
        elif key.get("init") == "grow":
            from dwt_lib.models.growth import grow_student
            gates = grow_student(teacher.mlm, mlm, out, data, tok, cfg.data.mlm_probability,
                                 save=main and not (out / "init").exists())
    elif key.get("target"):                      # notebook 06: label-smoothed targets instead of a teacher
        from dwt_lib.models.targets import SmoothedTarget
        teacher = SmoothedTarget(vocab, key["target"]["epsilon"])
    if key.get("init", "random") != "random" and not key.get("teacher"):
        raise ValueError(f"run {run.name}: init {key['init']!r} needs a teacher")

    use_device_attention(mlm, acc.device)
    model = SparseMLM(mlm)                       # MLM head and last layer on the masked rows only
    opt = make_optimizer(model, cfg)
    n_blocks = len(data.train)
    world = acc.num_processes
    if key.get("world_size", world) != world:    # the launcher started another number of processes
        raise RuntimeError(f"run {run.name}: launch.num_processes is {key['world_size']} but {world} "
                           f"process(es) are running: check launch.accelerate_config")
    gbs = global_batch(cfg, world)
    if n_blocks < gbs:           # before any step (the prefetch thread would raise it as a traceback)
        raise ConfigError(f"pretrain.batch_size_per_device: a global batch of {gbs} sequences ({pc.batch_size_per_device}"
                          f" per device x {world} process(es) x {pc.grad_accum_steps} accumulation steps) is more "
                          f"than the {n_blocks} training blocks of this data; lower pretrain.batch_size_per_device "
                          f"(or grad_accum_steps), or use more data")
    total = total_steps(cfg, n_blocks, world)
    warmup = max(1, round(pc.warmup_fraction * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))
    model, opt = acc.prepare(model, opt)
    a_soft = soft_weight(dict(key["alpha_soft"]), total) if teacher else None
    aware = a_soft if hasattr(a_soft, "update") else None      # the teacher-aware weight (notebook 06)
    ramp = ramp_steps(key["grow"]["ramp_fraction"], total) if gates else 0
    tau_fn = make_schedule(dict(key["temperature"])) if teacher else None
    snaps = snapshot_steps(pc.snapshot_fractions, total)
    bf16 = pc.precision == "bf16"

    def autocast():
        return torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16)

    step = 0
    window: list[torch.Tensor] = []            # per-step [total, hard, soft] since the last log line
    tokens_since = 0
    st = checkpoints.load(ckpt_dir, log=say, is_main=main)   # the newest intact one, or None
    lost = [f for s, f in snaps.items() if st and s <= st["step"] and integrity.problem(_snapshot(out, f))]
    if lost:         # resuming would skip the step that saves them: only a run from the start brings them back
        say(f"[dwt] {run.name}: snapshot(s) {', '.join(f'frac-{f:.2f}' for f in lost)} missing or damaged and the "
            f"checkpoint is past them (step {st['step']}); training again from step 0")
        st = None
    if st is not None:                           # resume: weights, optimizer, schedule, RNG, position
        acc.unwrap_model(model).load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        # each process its own generators (dropout masks differ per rank); a checkpoint from before per-rank
        # states, or from another world size, has rank 0's only: every process takes those, as before
        per_rank = st.get("rng_per_rank")
        _set_rng_state(per_rank[acc.process_index] if isinstance(per_rank, list) and len(per_rank) == world
                       else st["rng"])
        step = st["step"]
        # the steps since the last log line, so the next line averages the same steps as without a kill
        window, tokens_since = list(st.get("window", [])), st.get("tokens_since", 0)
        if aware:                                # its EMAs: the weight of the next steps depends on them
            aware.state = dict(st["aware"])
    if main:                                     # no checkpoint: drop the lines of a run killed before one
        _truncate_log(log_path, step)
    acc.wait_for_everyone()

    def save_checkpoint():
        # every process's generators, in rank order (gathered before rank 0 writes): a resume restores each its own
        rngs = gather_object([_rng_state()]) if world > 1 else [_rng_state()]
        if main:
            checkpoints.save(ckpt_dir, {"model": acc.unwrap_model(model).state_dict(), "optimizer": opt.state_dict(),
                                        "scheduler": sched.state_dict(), "rng": rngs[0], "rng_per_rank": rngs,
                                        "step": step,
                                        "window": window, "tokens_since": tokens_since,
                                        **({"aware": dict(aware.state)} if aware else {})})
            atomic_write_json(out / "progress.json", {"step": step, "total_steps": total,
                                                      "elapsed_s": elapsed + time.time() - t_start})
        acc.wait_for_everyone()

    bs, rank, accum = pc.batch_size_per_device, acc.process_index, pc.grad_accum_steps
    soft_all = dc.soft_loss_positions == "all"
    model.train()
    elapsed = 0.0
    if st is not None:         # a damaged progress.json only loses the wall time of earlier sessions
        elapsed = (read_json_or_none(out / "progress.json", log=say) or {}).get("elapsed_s", 0.0)
    t_start = t_log = time.time()
    bar = tqdm(total=total, initial=step, disable=not (progress and main), desc=run.name, dynamic_ncols=True)

    def make_batch(s: int):                      # the global batch of step s: a pure function of s
        g = torch.Generator().manual_seed(pc.seed * MASK_SEED + s)
        return mask_tokens(data.train[batch_indices(s, n_blocks, gbs, pc.seed)], tok, cfg.data.mlm_probability, g)

    batches = Prefetcher(make_batch, total)    # on an error its thread ends with its one pending batch
    while step < total:
        ids_all, labels_all = batches.get(step)
        pad_all = ids_all != tok.pad_token_id
        # Normalise by the *global* token counts, so the gradient is the mean over every masked
        # token of the global batch whatever the number of processes or micro-steps (DDP averages
        # over processes, hence the factor world).
        n_hard = max(int((labels_all != -100).sum()), 1)
        n_soft = max(int(pad_all.sum()) if soft_all else n_hard, 1)
        a_s = a_soft(step, total) if teacher else 0.0
        if gates:
            gates.set(gate_value(step, ramp))
        t_hard = torch.zeros(())
        tau = tau_fn(step, total) if teacher else 1.0
        parts = torch.zeros(3)
        for m in range(accum):
            lo = (m * world + rank) * bs
            ids = ids_all[lo:lo + bs].to(acc.device)
            labels = labels_all[lo:lo + bs].to(acc.device)
            attn = pad_all[lo:lo + bs].to(acc.device)
            select = attn if soft_all else labels != -100
            y = labels[select]
            extras = {} if aware else None
            with acc.no_sync(model) if m < accum - 1 else contextlib.nullcontext():
                loss, h, s = dwt_losses(model, teacher, ids, attn, select, y, autocast=autocast,
                                        alpha_hard=dc.alpha_hard, alpha_soft=a_s, temperature=tau,
                                        scale_by_t2=dc.scale_by_t2, n_hard=n_hard, n_soft=n_soft, extras=extras)
                acc.backward(loss * world)
            parts += torch.stack([loss.detach(), h.detach(), s.detach()]).float().cpu()
            if aware:
                t_hard = t_hard + torch.as_tensor(extras["teacher_hard"]).float().cpu()
        window.append(acc.reduce(parts.to(acc.device), "sum").cpu() if world > 1 else parts)
        tokens_since += int(pad_all.sum())
        if not torch.isfinite(window[-1]).all():
            raise NonFiniteLossError(
                f"run {run.name}: the loss is not finite (NaN or inf) at step {step + 1} (total/hard/soft = "
                f"{window[-1].tolist()}); nothing was recorded, the last good checkpoint is "
                + (f"step {n}" if (n := checkpoints.step_of(ckpt_dir)) else "none yet"), run.dir,
                diverged_fix("pretrain", pc.lr, pc.precision))
        if pc.max_grad_norm:
            acc.clip_grad_norm_(model.parameters(), pc.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if aware:       # the global batch's mean hard losses, student and teacher, on the same masked tokens
            t_hard = acc.reduce(t_hard.to(acc.device), "sum").cpu() if world > 1 else t_hard
            aware.update(step, float(window[-1][1]), float(t_hard))
        step += 1
        bar.update(1)
        if gates:        # the model "at step s" (eval, snapshot) has its gate at m(s)
            gates.set(gate_value(step, ramp))

        if step % pc.log_every == 0 or step == total:
            w = torch.stack(window).mean(0).tolist()
            now = time.time()
            # "step" counts optimizer steps done; loss/hard/soft average the steps since the last
            # line; alpha_soft and tau are the values used by the optimizer step that produced this
            # line, i.e. schedule(step - 1, total) (the loop's 0-based step before the increment).
            rec = {"step": step, "loss": w[0], "hard": w[1], "soft": w[2], "alpha_soft": a_s, "tau": tau,
                   "lr": sched.get_last_lr()[0], "tokens_per_s": tokens_since / max(now - t_log, 1e-9),
                   "elapsed_s": elapsed + now - t_start, **(aware.log() if aware else {}),
                   **({"gate": gates.m} if gates else {})}
            if step % pc.eval_every == 0 or step == total:
                ev = evaluate_mlm(model, data.validation, tok, cfg, acc, autocast)
                rec.update(eval_mlm_loss=ev["mlm_loss"], eval_mlm_accuracy=ev["mlm_accuracy"],
                           eval_blocks=ev["eval_blocks"])
            if main:
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if tb:
                acc.log({k: v for k, v in rec.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{w[0]:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            window, tokens_since, t_log = [], 0, time.time()
        if step in snaps and gates and gates.layers and gates.m < 1.0:
            raise ValueError(f"run {run.name}: snapshot at step {step} with the new layers' gate at {gates.m:.3f} "
                             f"< 1: set init.ramp_fraction at most the first pretrain.snapshot_fractions")
        if step in snaps and main:
            save_model(acc.unwrap_model(model).mlm, tok, out / "snapshots" / f"frac-{snaps[step]:.2f}")
        if step % pc.checkpoint_every == 0 or step == total:
            save_checkpoint()
    bar.close()
    batches.close()

    final = evaluate_mlm(model, data.validation, tok, cfg, acc, autocast)
    access = gather_object([{"process": acc.process_index, **data.train.access()}])   # every process's view
    if tb:
        acc.end_training()
    if main:
        save_model(acc.unwrap_model(model).mlm, tok, out / "model")
    acc.wait_for_everyone()
    return {"final_eval": final, "steps": total, "global_batch": gbs, "world_size": world,
            "train_time_s": elapsed + time.time() - t_start,     # all sessions of a resumed run
            "tokens_seen": total * gbs * cfg.data.max_seq_length, "params": n_params,
            "teacher_params": count_parameters(teacher.mlm) if key.get("teacher") else None,
            "snapshots": {f"{f:.2f}": f"snapshots/frac-{f:.2f}" for f in snaps.values()},
            "data_hash": data.hash, "train_blocks_access": access,
            **({"aware": dict(aware.state)} if aware else {})}


