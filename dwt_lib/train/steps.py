"""What each optimizer step of pre-training sees, outside the model: the number of steps, the global
batch, the blocks of step ``s`` (a slice of a per-epoch permutation, a pure function of ``s``), a
prefetcher for them, the learning-rate schedule, the optimizer and the snapshot steps.
Split out of :mod:`dwt_lib.train.pretrain` to keep the loop short."""
from __future__ import annotations

import functools
import math

import torch

from dwt_lib.config.schema import Config


def total_steps(cfg: Config, n_blocks: int, world_size: int) -> int:
    """Optimizer steps of a run: ``max_steps`` or ``epochs`` over ``n_blocks`` at the global batch."""
    if cfg.pretrain.max_steps is not None:
        return cfg.pretrain.max_steps
    return max(1, math.ceil(cfg.pretrain.epochs * n_blocks / global_batch(cfg, world_size)))


def global_batch(cfg: Config, world_size: int) -> int:
    """Sequences per optimizer step across all processes and accumulation micro-steps."""
    return cfg.pretrain.batch_size_per_device * world_size * cfg.pretrain.grad_accum_steps


def batch_indices(step: int, n_blocks: int, gbs: int, seed: int) -> torch.Tensor:
    """Block indices of the global batch at ``step``: a slice of the epoch's permutation."""
    per_epoch = n_blocks // gbs
    if per_epoch < 1:
        raise ValueError(f"the training split has {n_blocks} blocks, fewer than one global batch of {gbs}: "
                         f"lower pretrain.batch_size_per_device or use more data")
    epoch, k = divmod(step, per_epoch)
    return _epoch_permutation(n_blocks, seed, epoch)[k * gbs:(k + 1) * gbs]


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    # Once per epoch, not per step: a permutation of 157k blocks costs milliseconds of host time, which
    # on a GPU is as long as a small model's whole step.
    return torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


class Prefetcher:
    """``get(step)`` returns ``make(step)`` and starts ``make(step + 1)`` in a background thread, so the
    host prepares the next batch (indices, masking) while the device runs this one; torch releases the
    GIL in its ops. ``make`` must be a pure function of the step: then prefetching changes no result."""

    def __init__(self, make, total: int):
        from concurrent.futures import ThreadPoolExecutor
        self.make, self.total = make, total
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dwt-prefetch")
        self.pending: dict = {}

    def get(self, step: int):
        fut = self.pending.pop(step, None)
        self.pending.clear()
        out = fut.result() if fut is not None else self.make(step)
        if step + 1 < self.total:
            self.pending[step + 1] = self.pool.submit(self.make, step + 1)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to the peak over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups, the one no-weight-decay rule of pre-training and fine-tuning: no decay on the 1-d
    tensors (biases and norm weights: BERT's LayerNorm, ModernBERT's norms), as HF; frozen parameters left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def device_of(setting: str) -> torch.device:
    """The one device choice: ``launch.device`` (``auto``: CUDA when torch sees a GPU, else the CPU)."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(setting)


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW (decoupled decay) with no decay on biases and LayerNorm weights; fused when available."""
    pc = cfg.pretrain
    groups = decay_groups(model, pc.weight_decay)
    kw = dict(lr=pc.lr, betas=(pc.adam_beta1, pc.adam_beta2), eps=pc.adam_eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kw)



def snapshot_steps(fractions, total: int) -> dict[int, float]:
    """Step at which each snapshot fraction is saved (at least step 1)."""
    return {max(1, round(f * total)): f for f in fractions}
