"""Masked-LM pre-training with or without a weak teacher: one explicit Accelerate loop.

The same loop trains a teacher or a student alone (MLM only, paper Eq. 1) and a student with
DWT (Eq. 3: a_h * MLM + a_s(t) * tau(t)^2 * KL(teacher || student)). Read it top to bottom:

1. data: packed blocks from :mod:`dwt_lib.data`; step ``s`` uses a fixed slice of a per-epoch
   permutation and a mask drawn from a generator seeded by ``s``, so a resumed run (and a run
   on more processes with the same global batch) sees exactly the same tokens and masks;
2. model: random init, parameter remapping from the teacher (:mod:`dwt_lib.models.remap`) or growth
   from it (:mod:`dwt_lib.models.growth`, notebook 06: gated new layers, the gate a function of the step);
3. the step: encoder on all positions, MLM head only on the selected positions
   (:class:`dwt_lib.models.encoder.SparseMLM`), teacher (or notebook 06's label-smoothed target) under
   ``no_grad`` in eval mode; a_s from its schedule, or the teacher-aware weight
   (:class:`dwt_lib.models.targets.TeacherAwareWeight`, whose running means go into every checkpoint);
4. bookkeeping: JSON-lines log, held-out MLM eval, full checkpoints, model snapshots at
   fractions of training, and a stop on the first non-finite loss.

:func:`train` reads in the same order, one named part each: :func:`_setup` (accelerator, data, model, step 0
from :mod:`dwt_lib.train.init`, optimizer and schedules), :func:`_resume` (the newest intact checkpoint),
:func:`_step` (one optimizer step over the global batch), :func:`_bookkeeping` (log, evaluate, snapshot,
checkpoint) and :func:`_finish` (final eval, the model, the result).
"""
from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from dwt_lib.config.schedules import make_schedule
from dwt_lib.config.schema import Config
from dwt_lib.core.errors import ConfigError, NonFiniteLossError, diverged_fix
from dwt_lib.core.io import atomic_write_json
from dwt_lib.data.masking import EVAL_MASK_SEED, MASK_SEED, mask_tokens
from dwt_lib.data.prepare import prepare_pretraining_data
from dwt_lib.models import losses
from dwt_lib.models.encoder import SparseMLM, build_model, count_parameters, model_kwargs, special_ids, use_device_attention
from dwt_lib.models.growth import gate_value, ramp_steps
from dwt_lib.models.targets import soft_weight
from dwt_lib.runs import checkpoints, integrity
from dwt_lib.runs.registry import Run, read_json_or_none
from dwt_lib.train.init import initialise, save_model
from dwt_lib.train.steps import (Prefetcher, batch_indices, device_of, global_batch, lr_lambda, make_optimizer,
                                 snapshot_steps, total_steps)


def _snapshot(out, fraction: float):
    return out / "snapshots" / f"frac-{fraction:.2f}"


def dwt_losses(model, teacher, ids, attn, select, y, *, autocast=contextlib.nullcontext, alpha_hard=1.0,
               alpha_soft=1.0, temperature=1.0, scale_by_t2=True, n_hard=None, n_soft=None, extras=None):
    """One micro-batch of Eq. 3: ``(loss, hard, soft)`` (a :class:`~dwt_lib.models.losses.DWTLoss`) for the
    student ``model`` (a :class:`SparseMLM`), by :func:`dwt_lib.models.losses.dwt_loss`.

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
    if extras is not None and t_logits is not None:
        extras["teacher_hard"] = losses.hard_loss(t_logits, y).detach() * (n_y / (n_hard or n_y)) if n_y else 0.0
    # Eq. 3 itself: the function notebook 02 and tests/test_losses.py check (called through the module, so that a
    # test patching losses.hard_loss reaches the loop)
    return losses.dwt_loss(logits, y, t_logits, alpha_hard, alpha_soft, temperature, scale_by_t2=scale_by_t2,
                           hard_scale=n_y / (n_hard or n_y) if n_y else 1.0, soft_scale=len(y) / (n_soft or len(y)))


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, blocks: torch.Tensor, tokenizer, cfg: Config, accelerator,
                 autocast) -> dict:
    """Held-out MLM loss and accuracy on masked tokens, the same masks every time."""
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
        loss_sum += losses.hard_loss(logits, y) * len(y)
        correct += (logits.argmax(-1) == y).sum()
        count += len(y)
    loss_sum, correct, count = (accelerator.reduce(t, "sum") for t in (loss_sum, correct, count))
    model.train()
    c = max(count.item(), 1.0)
    # which held-out set: the first eval_blocks blocks (pretrain.eval_batches x batch x processes), masked the same
    return {"mlm_loss": loss_sum.item() / c, "mlm_accuracy": correct.item() / c, "eval_tokens": int(count.item()),
            "eval_blocks": n, "eval_batches": cfg.pretrain.eval_batches}


# ----------------------------------------------------------------------------- the loop

@dataclass
class _Loop:
    """Everything one pre-training session holds, set up by :func:`_setup` and moved on by the step."""
    cfg: Config
    run: Run
    acc: Any                                   # accelerate.Accelerator
    say: Callable[[str], None]
    tb: bool                                   # logging to TensorBoard too
    data: Any                                  # PretrainingData
    model: Any                                 # SparseMLM, prepared by the accelerator
    opt: Any
    sched: Any
    teacher: Any                               # SparseMLM, SmoothedTarget or None
    gates: Any                                 # growth.Gates or None
    n_params: int
    total: int
    gbs: int
    snaps: dict
    a_soft: Optional[Callable] = None          # a_s(step, total): a schedule or the teacher-aware weight
    tau_fn: Optional[Callable] = None
    ramp: int = 0
    step: int = 0
    window: list = field(default_factory=list)  # per-step [total, hard, soft] since the last log line
    tokens_since: int = 0
    elapsed: float = 0.0                       # wall time of earlier sessions of a resumed run
    t_start: float = 0.0
    t_log: float = 0.0
    a_s: float = 0.0                           # the values the last optimizer step used (logged)
    tau: float = 1.0

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @property
    def aware(self):                           # the teacher-aware soft weight (notebook 06), or None
        return self.a_soft if hasattr(self.a_soft, "update") else None

    @property
    def ckpt_dir(self):
        return self.run.dir / "checkpoints"

    def autocast(self):
        return torch.autocast(self.acc.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.pretrain.precision == "bf16")


def train(cfg: Config, run: Run, progress: bool = True) -> dict:
    """Pre-train (or resume) the run in ``run.dir``; returns the final metrics.

    ``run.key`` says what to train: ``size``, ``init`` (random | remap | grow), ``teacher`` (a run id or
    None) and, with a teacher, the distillation settings. Works under ``accelerate launch`` with
    any number of processes; the global batch is ``batch_size_per_device x processes x accum``.
    """
    from tqdm.auto import tqdm

    lp = _setup(cfg, run)
    _resume(lp)
    pc = cfg.pretrain
    n_blocks = len(lp.data.train)

    def make_batch(s: int):                      # the global batch of step s: a pure function of s
        g = torch.Generator().manual_seed(pc.seed * MASK_SEED + s)
        return mask_tokens(lp.data.train[batch_indices(s, n_blocks, lp.gbs, pc.seed)], lp.data.tokenizer,
                           cfg.data.mlm_probability, g)

    lp.model.train()
    lp.t_start = lp.t_log = time.time()
    bar = tqdm(total=lp.total, initial=lp.step, disable=not (progress and lp.main), desc=run.name,
               dynamic_ncols=True)
    batches = Prefetcher(make_batch, lp.total)   # on an error its thread ends with its one pending batch
    while lp.step < lp.total:
        _step(lp, *batches.get(lp.step))
        bar.update(1)
        _bookkeeping(lp, bar)
    bar.close()
    batches.close()
    return _finish(lp)


def _setup(cfg: Config, run: Run) -> _Loop:
    """The accelerator, the data, the student at its starting point (:func:`dwt_lib.train.init.initialise`),
    the optimizer and every schedule of the run."""
    from accelerate import Accelerator
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()      # no "Writing model shards" bars inside ours
    pc = cfg.pretrain
    if cfg.launch.num_threads:
        torch.set_num_threads(cfg.launch.num_threads)
    cpu = device_of(cfg.launch.device).type == "cpu"
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
    say = (lambda m: print(m, flush=True)) if acc.is_main_process else (lambda m: None)

    with acc.main_process_first():
        data = prepare_pretraining_data(cfg)
    tok = data.tokenizer
    torch.manual_seed(pc.seed)
    random.seed(pc.seed)
    np.random.seed(pc.seed)
    mlm = build_model(run.key["shape"], len(tok), special_ids=special_ids(tok), **model_kwargs(cfg))
    n_params = count_parameters(mlm)
    teacher, gates = initialise(run, mlm, data, tok, cfg.data.mlm_probability, acc.device, acc.is_main_process)

    use_device_attention(mlm, acc.device)
    model = SparseMLM(mlm)                       # MLM head and last layer on the masked rows only
    opt = make_optimizer(model, cfg)
    world, n_blocks = acc.num_processes, len(data.train)
    if run.key.get("world_size", world) != world:    # the launcher started another number of processes
        raise RuntimeError(f"run {run.name}: launch.num_processes is {run.key['world_size']} but {world} "
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
    key = run.key
    return _Loop(cfg=cfg, run=run, acc=acc, say=say, tb=bool(tb), data=data, model=model, opt=opt, sched=sched,
                 teacher=teacher, gates=gates, n_params=n_params, total=total, gbs=gbs,
                 snaps=snapshot_steps(pc.snapshot_fractions, total),
                 a_soft=soft_weight(dict(key["alpha_soft"]), total) if teacher else None,
                 tau_fn=make_schedule(dict(key["temperature"])) if teacher else None,
                 ramp=ramp_steps(key["grow"]["ramp_fraction"], total) if gates else 0)


def _resume(lp: _Loop) -> None:
    """Continue from the newest intact checkpoint, if any: weights, optimizer, schedule, every process's RNG,
    the position and the log window; a run whose saved snapshots were lost starts again from step 0."""
    out, acc = lp.run.dir, lp.acc
    st = checkpoints.load(lp.ckpt_dir, log=lp.say, is_main=lp.main)   # the newest intact one, or None
    lost = [f for s, f in lp.snaps.items() if st and s <= st["step"] and integrity.problem(_snapshot(out, f))]
    if lost:         # resuming would skip the step that saves them: only a run from the start brings them back
        lp.say(f"[dwt] {lp.run.name}: snapshot(s) {', '.join(f'frac-{f:.2f}' for f in lost)} missing or damaged "
               f"and the checkpoint is past them (step {st['step']}); training again from step 0")
        st = None
    if st is not None:                           # resume: weights, optimizer, schedule, RNG, position
        acc.unwrap_model(lp.model).load_state_dict(st["model"])
        lp.opt.load_state_dict(st["optimizer"])
        lp.sched.load_state_dict(st["scheduler"])
        # each process its own generators (dropout masks differ per rank); a checkpoint from before per-rank
        # states, or from another world size, has rank 0's only: every process takes those, as before
        per_rank = st.get("rng_per_rank")
        checkpoints.set_rng_state(per_rank[acc.process_index]
                                  if isinstance(per_rank, list) and len(per_rank) == acc.num_processes else st["rng"])
        lp.step = st["step"]
        # the steps since the last log line, so the next line averages the same steps as without a kill
        lp.window, lp.tokens_since = list(st.get("window", [])), st.get("tokens_since", 0)
        if lp.aware:                             # its EMAs: the weight of the next steps depends on them
            lp.aware.state = dict(st["aware"])
        # a damaged progress.json only loses the wall time of earlier sessions
        lp.elapsed = (read_json_or_none(out / "progress.json", log=lp.say) or {}).get("elapsed_s", 0.0)
    if lp.main:                                  # no checkpoint: drop the lines of a run killed before one
        checkpoints.truncate_log(out / "log.jsonl", lp.step)
    acc.wait_for_everyone()


def _step(lp: _Loop, ids_all: torch.Tensor, labels_all: torch.Tensor) -> None:
    """One optimizer step over the global batch of step ``lp.step``: Eq. 3 on each micro-batch of this
    process, the backward, a stop on a non-finite loss, clipping, the optimizer and the schedules."""
    acc, pc, dc, step, total = lp.acc, lp.cfg.pretrain, lp.cfg.distill, lp.step, lp.total
    world, rank, bs, accum = acc.num_processes, acc.process_index, pc.batch_size_per_device, pc.grad_accum_steps
    soft_all = dc.soft_loss_positions == "all"
    pad_all = ids_all != lp.data.tokenizer.pad_token_id
    # Normalise by the *global* token counts, so the gradient is the mean over every masked
    # token of the global batch whatever the number of processes or micro-steps (DDP averages
    # over processes, hence the factor world).
    n_hard = max(int((labels_all != -100).sum()), 1)
    n_soft = max(int(pad_all.sum()) if soft_all else n_hard, 1)
    lp.a_s = lp.a_soft(step, total) if lp.teacher else 0.0
    if lp.gates:
        lp.gates.set(gate_value(step, lp.ramp))
    t_hard = torch.zeros(())
    lp.tau = lp.tau_fn(step, total) if lp.teacher else 1.0
    parts = torch.zeros(3)
    for m in range(accum):
        lo = (m * world + rank) * bs
        ids = ids_all[lo:lo + bs].to(acc.device)
        labels = labels_all[lo:lo + bs].to(acc.device)
        attn = pad_all[lo:lo + bs].to(acc.device)
        select = attn if soft_all else labels != -100
        y = labels[select]
        extras = {} if lp.aware else None
        with acc.no_sync(lp.model) if m < accum - 1 else contextlib.nullcontext():
            loss, h, s = dwt_losses(lp.model, lp.teacher, ids, attn, select, y, autocast=lp.autocast,
                                    alpha_hard=dc.alpha_hard, alpha_soft=lp.a_s, temperature=lp.tau,
                                    scale_by_t2=dc.scale_by_t2, n_hard=n_hard, n_soft=n_soft, extras=extras)
            acc.backward(loss * world)
        parts += torch.stack([loss.detach(), h.detach(), s.detach()]).float().cpu()
        if lp.aware:
            t_hard = t_hard + torch.as_tensor(extras["teacher_hard"]).float().cpu()
    lp.window.append(acc.reduce(parts.to(acc.device), "sum").cpu() if world > 1 else parts)
    lp.tokens_since += int(pad_all.sum())
    if not torch.isfinite(lp.window[-1]).all():
        raise NonFiniteLossError(
            f"run {lp.run.name}: the loss is not finite (NaN or inf) at step {step + 1} (total/hard/soft = "
            f"{lp.window[-1].tolist()}); nothing was recorded, the last good checkpoint is "
            + (f"step {n}" if (n := checkpoints.step_of(lp.ckpt_dir)) else "none yet"), lp.run.dir,
            diverged_fix("pretrain", pc.lr, pc.precision))
    if pc.max_grad_norm:
        acc.clip_grad_norm_(lp.model.parameters(), pc.max_grad_norm)
    lp.opt.step()
    lp.sched.step()
    lp.opt.zero_grad(set_to_none=True)
    if lp.aware:       # the global batch's mean hard losses, student and teacher, on the same masked tokens
        t_hard = acc.reduce(t_hard.to(acc.device), "sum").cpu() if world > 1 else t_hard
        lp.aware.update(step, float(lp.window[-1][1]), float(t_hard))
    lp.step += 1
    if lp.gates:        # the model "at step s" (eval, snapshot) has its gate at m(s)
        lp.gates.set(gate_value(lp.step, lp.ramp))


def _bookkeeping(lp: _Loop, bar) -> None:
    """After step ``lp.step``: the log line (and the held-out eval), a snapshot, a checkpoint, when due."""
    pc, step, total = lp.cfg.pretrain, lp.step, lp.total
    if step % pc.log_every == 0 or step == total:
        _log(lp, bar)
    if step in lp.snaps and lp.gates and lp.gates.layers and lp.gates.m < 1.0:
        raise ValueError(f"run {lp.run.name}: snapshot at step {step} with the new layers' gate at {lp.gates.m:.3f} "
                         f"< 1: set init.ramp_fraction at most the first pretrain.snapshot_fractions")
    if step in lp.snaps and lp.main:
        save_model(lp.acc.unwrap_model(lp.model).mlm, lp.data.tokenizer, _snapshot(lp.run.dir, lp.snaps[step]))
    if step % pc.checkpoint_every == 0 or step == total:
        _save_checkpoint(lp)


def _log(lp: _Loop, bar) -> None:
    """One JSON line: the mean of the steps since the last line, the schedules, throughput, and the held-out
    MLM eval when due."""
    pc, step, total, aware, gates = lp.cfg.pretrain, lp.step, lp.total, lp.aware, lp.gates
    w = torch.stack(lp.window).mean(0).tolist()
    now = time.time()
    # "step" counts optimizer steps done; loss/hard/soft average the steps since the last
    # line; alpha_soft and tau are the values used by the optimizer step that produced this
    # line, i.e. schedule(step - 1, total) (the loop's 0-based step before the increment).
    rec = {"step": step, "loss": w[0], "hard": w[1], "soft": w[2], "alpha_soft": lp.a_s, "tau": lp.tau,
           "lr": lp.sched.get_last_lr()[0], "tokens_per_s": lp.tokens_since / max(now - lp.t_log, 1e-9),
           "elapsed_s": lp.elapsed + now - lp.t_start, **(aware.log() if aware else {}),
           **({"gate": gates.m} if gates else {})}
    if step % pc.eval_every == 0 or step == total:
        ev = evaluate_mlm(lp.model, lp.data.validation, lp.data.tokenizer, lp.cfg, lp.acc, lp.autocast)
        rec.update(eval_mlm_loss=ev["mlm_loss"], eval_mlm_accuracy=ev["mlm_accuracy"], eval_blocks=ev["eval_blocks"])
    if lp.main:
        with open(lp.run.dir / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
    if lp.tb:
        lp.acc.log({k: v for k, v in rec.items() if k != "step"}, step=step)
    bar.set_postfix(loss=f"{w[0]:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
    lp.window, lp.tokens_since, lp.t_log = [], 0, time.time()


def _save_checkpoint(lp: _Loop) -> None:
    """A full checkpoint (through :func:`dwt_lib.runs.checkpoints.save`, which a test wraps to pause there)."""
    from accelerate.utils import gather_object

    acc, aware = lp.acc, lp.aware
    # every process's generators, in rank order (gathered before rank 0 writes): a resume restores each its own
    rngs = gather_object([checkpoints.rng_state()]) if acc.num_processes > 1 else [checkpoints.rng_state()]
    if lp.main:
        checkpoints.save(lp.ckpt_dir, {"model": acc.unwrap_model(lp.model).state_dict(),
                                       "optimizer": lp.opt.state_dict(), "scheduler": lp.sched.state_dict(),
                                       "rng": rngs[0], "rng_per_rank": rngs, "step": lp.step,
                                       "window": lp.window, "tokens_since": lp.tokens_since,
                                       **({"aware": dict(aware.state)} if aware else {})})
        atomic_write_json(lp.run.dir / "progress.json", {"step": lp.step, "total_steps": lp.total,
                                                         "elapsed_s": lp.elapsed + time.time() - lp.t_start})
    acc.wait_for_everyone()


def _finish(lp: _Loop) -> dict:
    """The final held-out eval, the model (main process) and the run's result."""
    from accelerate.utils import gather_object

    acc, data, cfg, aware = lp.acc, lp.data, lp.cfg, lp.aware
    final = evaluate_mlm(lp.model, data.validation, data.tokenizer, cfg, acc, lp.autocast)
    access = gather_object([{"process": acc.process_index, **data.train.access()}])   # every process's view
    if lp.tb:
        acc.end_training()
    if lp.main:
        save_model(acc.unwrap_model(lp.model).mlm, data.tokenizer, lp.run.dir / "model")
    acc.wait_for_everyone()
    return {"final_eval": final, "steps": lp.total, "global_batch": lp.gbs, "world_size": acc.num_processes,
            "train_time_s": lp.elapsed + time.time() - lp.t_start,     # all sessions of a resumed run
            "tokens_seen": lp.total * lp.gbs * cfg.data.max_seq_length, "params": lp.n_params,
            "teacher_params": count_parameters(lp.teacher.mlm) if lp.run.key.get("teacher") else None,
            "snapshots": ({f"{f:.2f}": f"snapshots/frac-{f:.2f}" for f in lp.snaps.values()} if lp.total else
                          {f"{f:.2f}": "model" for f in cfg.pretrain.snapshot_fractions}),  # 0 steps: the initial model
            "data_hash": data.hash, "train_blocks_access": access,
            **({"aware": dict(aware.state)} if aware else {})}
