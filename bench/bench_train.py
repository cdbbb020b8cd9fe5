"""Pre-training step benchmarks for the ``mini`` sizes (batch 32 x 128, CPU): the library's step
against the usual implementations, timed side by side in one process.

A *step* is what :func:`dwt_lib.train.pretrain.train` does per optimizer step: ``mask_tokens`` on the
batch, forward(s), loss, backward, grad clip, AdamW step, schedule step, ``zero_grad``. The
project's variants call the library's pieces (``mask_tokens``, ``SparseMLM``, ``dwt_losses``,
``make_optimizer``); the references are written here, as the usual code looks:

- ``stock``: ``BertForMaskedLM(input_ids, attention_mask, labels=labels)`` (full logits, HF's
  loss), in the same bf16 autocast, plain ``torch.optim.AdamW``;
- ``distil``: a DistilBERT-distiller-style DWT step: student full logits (bf16 autocast),
  teacher in float32 (no autocast) with full logits, KL (batchmean, as the distiller) over all
  non-padding positions, plus the MLM loss over full logits; plain ``torch.optim.AdamW``.

Timing: every variant runs one step per round, in turn (alternating), after warm-up rounds;
each variant's figure is the median of its rounds. Peak memory: each variant in a fresh
subprocess, peak RSS (``VmHWM``, reset after building the models and optimizer through
``/proc/self/clear_refs``) over 3 steps minus RSS after the build: what the steps add
(activations, gradients, optimizer state, loss buffers).

    python bench/bench_train.py                  # timings + memory, prints a table
    python bench/bench_train.py --profile dwt    # torch.profiler table of one step
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dwt_lib.config.load import load_params
from dwt_lib.data.masking import mask_tokens
from dwt_lib.data.prepare import prepare_pretraining_data
from dwt_lib.models.losses import hard_loss
from dwt_lib.models.encoder import SparseMLM, build_model, train_flops_per_sequence, use_device_attention
from dwt_lib.train.pretrain import dwt_losses
from dwt_lib.train.steps import lr_lambda, make_optimizer

BATCH, SEQ = 32, 128
STUDENT, TEACHER = "mini-student", "mini-teacher-4l"


# ----------------------------------------------------------------------------- setup

def setup(n_batches: int = 4, seed: int = 0):
    """Config, tokenizer and ``n_batches`` real packed blocks [BATCH, SEQ] of the mini profile's data."""
    cfg = load_params("mini")
    data = prepare_pretraining_data(cfg)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[:n_batches * BATCH]
    batches = [data.train[idx[i * BATCH:(i + 1) * BATCH]].clone() for i in range(n_batches)]
    return cfg, data.tokenizer, batches


def model_kw(cfg) -> dict:
    """``build_model`` keywords as ``pretrain.train`` passes them (the profile's dropout)."""
    return dict(max_position_embeddings=max(512, cfg.data.max_seq_length),
                hidden_dropout_prob=cfg.model.hidden_dropout_prob,
                attention_probs_dropout_prob=cfg.model.attention_probs_dropout_prob)


def _bf16(enabled=True):
    return lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def teacher_bf16_weights(teacher: torch.nn.Module) -> torch.nn.Module:
    """Lever: the frozen teacher's weights cast to bf16 once (autocast re-casts frozen fp32 weights
    on every call: its weight cache only keeps leaves that require grad)."""
    return teacher.to(torch.bfloat16)


def _sparse(mlm, selected_last_layer=None):
    """``SparseMLM`` as the library builds it (None), or with ``selected_last_layer`` forced."""
    return SparseMLM(mlm) if selected_last_layer is None else SparseMLM(mlm, selected_last_layer=selected_last_layer)


class Variant:
    """One kind of training step with its own model(s), optimizer and masking generator."""

    def __init__(self, name, cfg, tok, kind, precision="bf16", teacher_dtype=None, teacher_sel=None,
                 student_sel=None, cpu_attention=None, teacher_sdpa=False, seed=0):
        self.name, self.cfg, self.tok, self.kind = name, cfg, tok, kind
        vocab = len(tok)
        torch.manual_seed(seed)
        self.mlm = build_model(STUDENT, vocab, **model_kw(cfg))
        self.teacher = None
        if kind in ("dwt", "distil"):
            t = build_model(TEACHER, vocab, **model_kw(cfg))
            t.eval().requires_grad_(False)
            if teacher_dtype == "bf16":
                teacher_bf16_weights(t)
            self.teacher = _sparse(t, teacher_sel) if kind == "dwt" else t
        if cpu_attention is None:                   # as pretrain.train does: on CPU, the CPU attention
            cpu_attention = kind in ("student", "dwt")
        if kind in ("student", "dwt") and cpu_attention:
            use_device_attention(self.mlm, "cpu")
            if self.teacher is not None and not teacher_sdpa:
                use_device_attention(self.teacher, "cpu")
        if kind in ("student", "dwt"):
            self.model = _sparse(self.mlm, student_sel)
            self.opt = make_optimizer(self.model, cfg)
        else:                                   # references: the usual optimizer
            self.model = self.mlm
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.pretrain.lr,
                                         weight_decay=cfg.pretrain.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(10, 1000))
        self.model.train()
        self.autocast = _bf16(precision == "bf16")
        self.precision = precision
        self.step_i = 0

    def step(self, blocks: torch.Tensor) -> float:
        cfg, tok = self.cfg, self.tok
        g = torch.Generator().manual_seed(1_000_003 + self.step_i)
        self.step_i += 1
        ids, labels = mask_tokens(blocks, tok, cfg.data.mlm_probability, g)
        attn = ids != tok.pad_token_id
        if self.kind in ("student", "dwt"):          # the library's micro-step (pretrain.train)
            select = labels != -100
            y = labels[select]
            n = max(int(select.sum()), 1)
            loss, h, s = dwt_losses(self.model, self.teacher, ids, attn, select, y, autocast=self.autocast,
                                    alpha_soft=1.0 if self.teacher is not None else 0.0, temperature=1.0,
                                    n_hard=n, n_soft=n)
            loss.backward()
        elif self.kind == "stock":
            with self.autocast():
                loss = self.model(input_ids=ids, attention_mask=attn.long(), labels=labels).loss
            loss.backward()
        else:                                        # DistilBERT distiller (Sanh et al.), MLM + KL
            with self.autocast():
                s_logits = self.model(input_ids=ids, attention_mask=attn.long()).logits
            with torch.no_grad():                    # teacher in float32, full logits
                t_logits = self.teacher(input_ids=ids, attention_mask=attn.long()).logits
            m = attn.unsqueeze(-1).expand_as(s_logits)
            V = s_logits.size(-1)
            s_sel = torch.masked_select(s_logits.float(), m).view(-1, V)
            t_sel = torch.masked_select(t_logits, m).view(-1, V)
            T = 1.0
            loss_ce = F.kl_div(F.log_softmax(s_sel / T, -1), F.softmax(t_sel / T, -1),
                               reduction="batchmean") * T ** 2
            loss_mlm = F.cross_entropy(s_logits.float().view(-1, V), labels.view(-1), ignore_index=-100)
            loss = loss_ce + loss_mlm
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.pretrain.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def flops_per_step(self, blocks: torch.Tensor) -> float:
        """Model FLOPs of one step (student training + teacher forward), masked head only for the
        project's variants, full head for the references."""
        n_masked = BATCH * SEQ * 0.15 * float((blocks != self.tok.pad_token_id).float().mean())
        sparse = self.kind in ("student", "dwt")
        head = n_masked / BATCH if sparse else SEQ
        f = BATCH * train_flops_per_sequence(self.mlm.config, SEQ, head)
        if self.teacher is not None:
            tc = (self.teacher.mlm if sparse else self.teacher).config
            f += BATCH * train_flops_per_sequence(tc, SEQ, head, train=False)
        return f

    def flops_skipped(self, blocks: torch.Tensor) -> float:
        """FLOPs of :meth:`flops_per_step` not executed because the last layer runs on the
        selected rows only (its Q and output projections, feed-forward and attention rows)."""
        frac = 0.15 * float((blocks != self.tok.pad_token_id).float().mean())
        out = 0.0
        for m, mult in ((self.model, 3.0), (self.teacher, 1.0)):
            if isinstance(m, SparseMLM) and m.selected_last_layer:
                c = m.mlm.config
                H, I = c.hidden_size, c.intermediate_size
                per_tok = 2 * (2 * H * H + 2 * H * I) + 2 * 2 * SEQ * H
                out += mult * BATCH * SEQ * (1 - frac) * per_tok
        return out


def matmul_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of an n x n x n ``torch.mm`` at ``dtype`` in this process (the 'peak')."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


VARIANTS = {   # name -> Variant kwargs; None (default) = as the library's training loop does it
    "student": dict(kind="student"),
    "dwt": dict(kind="dwt"),
    "stock": dict(kind="stock"),
    "distil": dict(kind="distil"),
    "student_fp32": dict(kind="student", precision="fp32"),
    # levers, one at a time ("before" = neither: SDPA attention, last layer on every row)
    "student_before": dict(kind="student", student_sel=False, cpu_attention=False),
    "dwt_before": dict(kind="dwt", teacher_sel=False, student_sel=False, cpu_attention=False),
    "student_before_fp32": dict(kind="student", precision="fp32", student_sel=False, cpu_attention=False),
    "student_sel_only": dict(kind="student", student_sel=True, cpu_attention=False),
    "student_attn_only": dict(kind="student", student_sel=False, cpu_attention=True),
    "dwt_teacher_sel_only": dict(kind="dwt", teacher_sel=True, student_sel=False, cpu_attention=False),
    "dwt_teacher_bf16": dict(kind="dwt", teacher_dtype="bf16"),          # tried, not kept
    "dwt_teacher_sdpa": dict(kind="dwt", teacher_sdpa=True),             # tried, not kept (SDPA forward)
}


def time_variants(names, cfg, tok, batches, rounds: int = 6, warmup: int = 2) -> dict:
    """Median seconds per step of each variant, alternating one step of each per round."""
    vs = [Variant(n, cfg, tok, **VARIANTS[n]) for n in names]
    times = {n: [] for n in names}
    for r in range(warmup + rounds):
        for v in vs:
            b = batches[r % len(batches)]
            t = time.perf_counter()
            v.step(b)
            dt = time.perf_counter() - t
            if r >= warmup:
                times[v.name].append(dt)
    out = {}
    for v in vs:
        out[v.name] = {"median_s": statistics.median(times[v.name]), "all_s": times[v.name],
                       "flops": v.flops_per_step(batches[0]), "flops_skipped": v.flops_skipped(batches[0]),
                       "precision": v.precision}
    return out


# ----------------------------------------------------------------------------- memory

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _vm_hwm_mb() -> float:
    """Peak resident set size of this process (``VmHWM``): per address space, so unlike
    ``ru_maxrss`` it does not inherit the parent's peak across fork + exec."""
    for ln in open("/proc/self/status"):
        if ln.startswith("VmHWM:"):
            return int(ln.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _mem_child(name: str, blocks_path: str, steps: int) -> None:
    cfg = load_params("mini")
    from transformers import PreTrainedTokenizerFast
    from dwt_lib.data.prepare import cache_path
    tok = PreTrainedTokenizerFast.from_pretrained(str(cache_path(cfg.data) / "tokenizer"))
    batches = torch.load(blocks_path)
    v = Variant(name, cfg, tok, **VARIANTS[name])
    try:                                 # reset the peak to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    base = _rss_mb()
    for i in range(steps):
        v.step(batches[i % len(batches)])
    peak = _vm_hwm_mb()
    print(json.dumps({"variant": name, "rss_after_build_mb": base, "peak_rss_mb": peak, "peak_reset": reset,
                      "step_peak_increase_mb": peak - base}))


def peak_memory(names, batches, steps: int = 3) -> dict:
    """Peak RSS increase (MB) of ``steps`` steps per variant, each in a fresh subprocess."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        p = str(Path(d) / "blocks.pt")
        torch.save(batches, p)
        for n in names:
            r = subprocess.run([sys.executable, __file__, "--mem-child", n, "--blocks", p, "--steps", str(steps),
                                "--threads", str(torch.get_num_threads())],
                               capture_output=True, text=True, check=True)
            out[n] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def soft_loss_buffers(tok, blocks) -> dict:
    """Float32 (rows x vocab) bytes of one logits-sized soft-loss buffer: masked rows (ours) vs all
    non-pad positions (the distiller) vs every position."""
    V = len(tok)
    nonpad = int((blocks != tok.pad_token_id).sum())
    masked = 0.15 * nonpad
    mb = lambda rows: rows * V * 4 / 2 ** 20
    return {"masked_rows": masked, "nonpad_rows": nonpad, "all_rows": blocks.numel(),
            "masked_mb": mb(masked), "nonpad_mb": mb(nonpad), "all_mb": mb(blocks.numel())}


# ----------------------------------------------------------------------------- profile

def profile(name: str, cfg, tok, batches, top: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile as tprof, record_function
    v = Variant(name, cfg, tok, **VARIANTS[name])
    for i in range(2):
        v.step(batches[i % len(batches)])
    with tprof(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("step"):
            v.step(batches[0])
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="student,dwt,dwt_teacher_bf16,stock,distil")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profile", default=None, help="print a torch.profiler table of one step of this variant")
    ap.add_argument("--memory", action="store_true", help="also peak memory per variant (subprocesses)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--blocks", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.mem_child:
        _mem_child(a.mem_child, a.blocks, a.steps)
        return 0
    cfg, tok, batches = setup()
    if a.profile:
        print(profile(a.profile, cfg, tok, batches))
        return 0
    names = a.variants.split(",")
    res = time_variants(names, cfg, tok, batches, a.rounds, a.warmup)
    for n, r in res.items():
        print(f"{n:18s} {r['median_s']:.3f} s/step  ({r['precision']}; "
              f"{r['flops'] / r['median_s'] / 1e9:.1f} GFLOP/s)  all: {[round(x, 3) for x in r['all_s']]}")
    if a.memory:
        for n, r in peak_memory(names, batches).items():
            print(f"{n:18s} peak RSS increase {r['step_peak_increase_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
