"""Real speed of every run size of a GPU profile, in under a minute, to check `dwt plan` before the full run.

For the profile (default ``gpu``) it times, on random blocks of the profile's vocabulary, sequence
length and batch, the library's training step for each distinct pre-training run kind: every
teacher alone, the standalone student, and the student distilled from each teacher (``SparseMLM``
+ ``dwt_losses`` under the profile's precision, backward, clip, ``make_optimizer``'s AdamW, the
step's host work: ``batch_indices``, ``mask_tokens`` on the CPU in the loop's prefetch thread, the loss
read back). Then one
fine-tuning step of the student classifier (``classifier_logits``, AdamW, clip) at the profile's
fine-tuning batch on GLUE-length rows, alone and with ``launch.finetune_workers`` processes at once.
From the measured tokens/s and steps/s it recomputes the plan's wall time and prints it beside the
plan's estimate at ``launch.assumed_mfu``, with the ``pretrain.max_steps`` that would fit the target.

    python bench/gpu_study.py                          # on the GPU: ~40 s
    python bench/gpu_study.py --smoke                  # tiny sizes, a few steps, any device (CPU test)
    python bench/gpu_study.py --json bench.json        # also write the numbers
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from dwt_lib.config.load import load_params
from dwt_lib.data.tokens import SPECIAL_TOKENS
from dwt_lib.data.masking import mask_tokens
from dwt_lib.models.encoder import (SparseMLM, build_model, classifier_logits, train_flops_per_sequence, use_device_attention)
from dwt_lib.config.sizes import resolve_size
from dwt_lib.train.steps import Prefetcher, batch_indices, make_optimizer
from dwt_lib.train.pretrain import dwt_losses

SMOKE = {"model.sizes": {"s": {"layers": 2, "hidden": 32, "heads": 2}, "t": {"layers": 1, "hidden": 32, "heads": 2}},
         "model.student": "s", "model.teachers": {"weak": "t"}, "studies.teacher_quality": ["weak"], "studies.beyond": {},
         "studies.soft_weight_teacher": "weak", "studies.param_remap_teacher": "weak",
         "data.vocab_size": 300, "data.max_seq_length": 32, "pretrain.batch_size_per_device": 4,
         "finetune.batch_size": 4, "launch.device": "auto", "launch.finetune_workers": 1}


class _Ids:
    """What ``mask_tokens`` needs of a tokenizer: the trained WordPiece's special ids (0-4)."""
    all_special_ids = list(range(len(SPECIAL_TOKENS)))     # [PAD] [UNK] [CLS] [SEP] [MASK]
    pad_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 2, 3, 4

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self):
        return self.vocab


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model_kw(cfg):
    return dict(max_position_embeddings=max(512, cfg.data.max_seq_length),
                hidden_dropout_prob=cfg.model.hidden_dropout_prob,
                attention_probs_dropout_prob=cfg.model.attention_probs_dropout_prob)


class PretrainStep:
    """One optimizer step of ``pretrain.train`` for a size, with or without a (frozen) teacher."""

    def __init__(self, cfg, size: str, teacher: str | None, device, blocks: torch.Tensor):
        self.cfg, self.device, self.tok = cfg, device, _Ids(cfg.data.vocab_size)
        torch.manual_seed(0)
        V = cfg.data.vocab_size
        mlm = build_model(resolve_size(size, cfg.model.sizes), V, **_model_kw(cfg))
        use_device_attention(mlm, device)
        self.model = SparseMLM(mlm).to(device).train()
        self.teacher = None
        if teacher:
            t = build_model(resolve_size(teacher, cfg.model.sizes), V, **_model_kw(cfg)).eval().requires_grad_(False)
            use_device_attention(t, device)
            self.teacher = SparseMLM(t).to(device)
        self.opt = make_optimizer(self.model, cfg)
        self.blocks, self.n_blocks, self.step_i = blocks, len(blocks), 0
        self.bf16 = cfg.pretrain.precision == "bf16"
        self.batches = Prefetcher(self._batch, 10 ** 9)          # as the loop: the next batch in a thread

    def _batch(self, s: int):
        g = torch.Generator().manual_seed(s)
        idx = batch_indices(s, self.n_blocks, self.cfg.pretrain.batch_size_per_device, self.cfg.pretrain.seed)
        return mask_tokens(self.blocks[idx], self.tok, self.cfg.data.mlm_probability, g)

    def __call__(self) -> None:
        cfg, dev = self.cfg, self.device
        ids, labels = self.batches.get(self.step_i)
        self.step_i += 1
        ids, labels = ids.to(dev), labels.to(dev)
        attn = ids != self.tok.pad_token_id
        select = labels != -100
        ac = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16)  # noqa: E731
        loss, h, s = dwt_losses(self.model, self.teacher, ids, attn, select, labels[select], autocast=ac,
                                alpha_soft=1.0 if self.teacher is not None else 0.0)
        loss.backward()
        torch.stack([loss.detach(), h.detach(), s.detach()]).float().cpu()    # the loop reads the losses back
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.pretrain.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def flops(self) -> float:
        """Model FLOPs of a step, as `dwt plan` counts them."""
        cfg = self.cfg
        L, n = cfg.data.max_seq_length, cfg.pretrain.batch_size_per_device
        masked = cfg.data.mlm_probability * (L - 2)
        f = train_flops_per_sequence(self.model.mlm.config, L, masked)
        if self.teacher is not None:
            f += train_flops_per_sequence(self.teacher.mlm.config, L, masked, train=False)
        return n * f


class FinetuneStep:
    """One step of ``finetune.finetune``'s loop for the student classifier on GLUE-length rows."""

    def __init__(self, cfg, device, mean_len: int = 48):
        from dwt_lib.train.finetune import build_classifier
        self.cfg, self.device = cfg, device
        mlm = build_model(resolve_size(cfg.model.student, cfg.model.sizes), cfg.data.vocab_size, **_model_kw(cfg))
        self.model = build_classifier(mlm, "sst2", 1).to(device).train()
        use_device_attention(self.model, device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.finetune.lr)
        self.len = min(mean_len, cfg.finetune.max_seq_length)
        self.bf16 = cfg.finetune.precision == "bf16"

    def __call__(self) -> None:
        n, V, dev = self.cfg.finetune.batch_size, self.cfg.data.vocab_size, self.device
        ids = torch.randint(5, V, (n, self.len))
        batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids),
                 "labels": torch.randint(0, 2, (n,))}
        batch = {k: v.to(dev) for k, v in batch.items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = classifier_logits(self.model, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def time_steps(step, device, warmup: int, steps: int) -> float:
    """Median seconds per step after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ft_worker(cfg_dict, device, warmup, steps, threads, barrier, q):
    from dwt_lib.config.load import config_from_dict
    torch.set_num_threads(threads)
    cfg = config_from_dict(cfg_dict)
    st = FinetuneStep(cfg, torch.device(device))
    for _ in range(warmup):
        st()
    _sync(torch.device(device))
    barrier.wait()
    t = time.perf_counter()
    for _ in range(steps):
        st()
    _sync(torch.device(device))
    q.put(time.perf_counter() - t)


def finetune_overlap(cfg, device, workers: int, warmup: int, steps: int) -> float:
    """Steps per second of ``workers`` fine-tuning processes at once, all of them together."""
    import multiprocessing as mp
    import os
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(workers), ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    ps = [ctx.Process(target=_ft_worker, args=(cfg.to_dict(), str(device), warmup, steps, threads, barrier, q))
          for _ in range(workers)]
    for p in ps:
        p.start()
    walls = [q.get(timeout=300) for _ in ps]
    for p in ps:
        p.join()
    return workers * steps / max(walls)


def run_kinds(cfg) -> dict[str, tuple[str, str | None]]:
    """Distinct pre-training step kinds: name -> (size, teacher size or None)."""
    kinds = {f"teacher-{r}": (s, None) for r, s in cfg.model.teachers.items()}
    kinds["student"] = (cfg.model.student, None)
    kinds.update({f"dwt-{r}": (cfg.model.student, s) for r, s in cfg.model.teachers.items()})
    return kinds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="gpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--target-minutes", type=float, default=10.0,
                    help="the study's budget; the max_steps that fits it is printed")
    ap.add_argument("--overhead-s", type=float, default=60.0,
                    help="data loading, model saving, notebook start-up: not benchmarked here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: checks the script runs (CPU is fine)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    cfg = load_params(a.profile, SMOKE if a.smoke else None)
    if a.smoke:
        a.steps, a.warmup = 2, 1
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.launch.device != "cpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    from dwt_lib.studies.plan import make_plan
    plan = make_plan(cfg.replace(**{"launch.device": "cuda"}))   # the device-time estimate, also on CPU
    peak = cfg.launch.peak_tflops * 1e12
    L, B = cfg.data.max_seq_length, cfg.pretrain.batch_size_per_device
    print(f"# {name}, torch {torch.__version__}; profile {cfg.profile}: batch {B} x {L}, vocab {cfg.data.vocab_size}, "
          f"{cfg.pretrain.precision}; peak {cfg.launch.peak_tflops:g} TFLOP/s", flush=True)
    t0 = time.time()
    n_blocks = max(plan["blocks"], 2 * B) if not a.smoke else 4 * B
    res = {"device": name, "profile": cfg.profile, "kinds": {}}
    blocks = torch.randint(len(SPECIAL_TOKENS), cfg.data.vocab_size, (n_blocks, L))    # [CLS] ... [SEP], no padding
    blocks[:, 0], blocks[:, -1] = 2, 3
    for kind, (size, teacher) in run_kinds(cfg).items():
        st = PretrainStep(cfg, size, teacher, device, blocks)
        s = time_steps(st, device, a.warmup, a.steps)
        r = {"s_per_step": s, "tokens_per_s": B * L / s, "mfu": st.flops() / s / peak}
        res["kinds"][kind] = r
        print(f"{kind:<24} {size:<16} {teacher or '':<16} {s * 1e3:8.2f} ms/step {r['tokens_per_s']:>12,.0f} tok/s "
              f"MFU {r['mfu']:.3f}", flush=True)
        st.batches.close()
        del st
    ft = FinetuneStep(cfg, device)
    ft_s = time_steps(ft, device, a.warmup, 3 * a.steps)
    del ft
    res["finetune_s_per_step"] = ft_s
    w = cfg.launch.finetune_workers
    ft_rate = 1.0 / ft_s
    if w > 1:
        ft_rate = finetune_overlap(cfg, device, w, a.warmup, 3 * a.steps)
    res["finetune_steps_per_s"] = ft_rate
    print(f"fine-tuning step (batch {cfg.finetune.batch_size}): {ft_s * 1e3:.2f} ms alone; {w} process(es) at once: "
          f"{ft_rate:,.0f} steps/s together ({ft_rate * ft_s:.1f}x one)", flush=True)

    # The plan again, with measured speeds: each run's tokens at its kind's tokens/s.
    pre_s = 0.0
    for row in plan["rows"]:
        if "same_as" in row or not row["tokens"]:      # random-init: no pre-training steps
            continue
        kind = row["run"] if row["run"].startswith(("teacher-", "student")) else "dwt-" + row["teacher"][8:]
        pre_s += row["tokens"] / res["kinds"][kind]["tokens_per_s"]
    dt = plan["device_time"]
    ft_meas = dt["finetune_steps"] / ft_rate
    total = pre_s + ft_meas + a.overhead_s
    mfu = plan["total_pflop"] * 1e15 / pre_s / peak
    steps = plan["rows"][0]["steps"]
    fit = math.floor(steps * max(0.0, a.target_minutes * 60 - ft_meas - a.overhead_s) / pre_s)
    res.update(pretrain_s=pre_s, finetune_s=ft_meas, overhead_s=a.overhead_s, total_s=total, measured_mfu=mfu,
               plan=dt, max_steps_to_fit=fit, bench_wall_s=time.time() - t0)
    print(f"pre-training: plan {dt['pretrain_s']:,.0f} s at {dt['assumed_mfu']:.0%} MFU; measured {pre_s:,.0f} s "
          f"({mfu:.1%} MFU)")
    print(f"fine-tuning {dt['finetune_runs']} runs, {dt['finetune_steps']:,} steps: plan {dt['finetune_s']:,.0f} s; "
          f"measured {ft_meas:,.0f} s")
    print(f"study: {total:,.0f} s = {total / 60:.1f} min with {a.overhead_s:.0f} s overhead "
          f"(budget {a.target_minutes:g} min): {'fits' if total <= a.target_minutes * 60 else 'OVERRUNS'}; "
          f"pretrain.max_steps that fits: {fit:,} (profile: {steps:,}); bench took {time.time() - t0:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
