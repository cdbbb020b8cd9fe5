"""Paper-size DWT step on one GPU in bf16: tokens/s, MFU, DWT / student-only ratio, peak memory.

Student ``paper-student`` (6L/768H, vocab 30522), weak teacher ``paper-teacher-4l``, sequence
128, at 16 and 128 sequences per device. The step is the library's (``mask_tokens`` on random
ids of BERT's uncased vocabulary, ``SparseMLM`` + ``dwt_losses`` under bf16 autocast, backward,
clip, ``make_optimizer``'s fused AdamW, ``zero_grad``); timings alternate student-only and DWT
steps after warm-up (medians, ``torch.cuda.synchronize`` around each step). MFU = model FLOPs
(``train_flops_per_sequence``: 6 x non-embedding params x tokens + attention + masked-head
FLOPs; the DWT step adds the teacher's forward) per second / ``--peak`` (default 989e12, the
H100/H200 SXM dense bf16 peak). Peak memory: ``torch.cuda.max_memory_allocated`` of one step of
each variant, built alone.

    python bench/gpu_paper_size.py                  # on a GPU
    python bench/gpu_paper_size.py --smoke          # tiny sizes, 2 steps, any device (CPU test)
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import torch

from dwt_lib.config.load import load_params
from dwt_lib.data.masking import mask_tokens
from dwt_lib.models.encoder import SparseMLM, build_model, train_flops_per_sequence, use_device_attention
from dwt_lib.train.pretrain import dwt_losses
from dwt_lib.train.steps import make_optimizer


class _BertUncasedIds:
    """What ``mask_tokens`` needs of a tokenizer, with BERT uncased's special ids."""
    all_special_ids = [0, 100, 101, 102, 103]     # [PAD] [UNK] [CLS] [SEP] [MASK]
    pad_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 101, 102, 103

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self):
        return self.vocab


def _blocks(n: int, seq: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    b = torch.randint(999, vocab, (n, seq), generator=g)
    b[:, 0], b[:, -1] = 101, 102
    return b


class Step:
    def __init__(self, cfg, student: str, teacher: str | None, vocab: int, device):
        self.device = device
        torch.manual_seed(0)
        mlm = build_model(student, vocab, max_position_embeddings=512)
        use_device_attention(mlm, device)                 # as pretrain.train: SDPA on GPU
        self.model = SparseMLM(mlm).to(device).train()
        self.teacher = None
        if teacher:
            t = build_model(teacher, vocab, max_position_embeddings=512).eval().requires_grad_(False)
            use_device_attention(t, device)
            self.teacher = SparseMLM(t).to(device)
        self.opt = make_optimizer(self.model, cfg)
        self.cfg = cfg
        self.i = 0

    def __call__(self, blocks, tok) -> None:
        g = torch.Generator().manual_seed(self.i)
        self.i += 1
        ids, labels = mask_tokens(blocks, tok, 0.15, g)
        ids, labels = ids.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        attn = ids != tok.pad_token_id
        select = labels != -100
        y = labels[select]
        ac = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)  # noqa: E731
        loss, _, _ = dwt_losses(self.model, self.teacher, ids, attn, select, y, autocast=ac,
                                alpha_soft=1.0 if self.teacher is not None else 0.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.pretrain.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def flops(self, n: int, seq: int) -> float:
        head = 0.15 * seq
        f = n * train_flops_per_sequence(self.model.mlm.config, seq, head)
        if self.teacher is not None:
            f += n * train_flops_per_sequence(self.teacher.mlm.config, seq, head, train=False)
        return f


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg, args, device, n: int) -> dict:
    tok = _BertUncasedIds(args.vocab)
    g = torch.Generator().manual_seed(n)
    data = [_blocks(n, args.seq, args.vocab, g) for _ in range(4)]
    steps = {"student": Step(cfg, args.student, None, args.vocab, device),
             "dwt": Step(cfg, args.student, args.teacher, args.vocab, device)}
    times = {k: [] for k in steps}
    for r in range(args.warmup + args.steps):
        for k, st in steps.items():
            _sync(device)
            t = time.perf_counter()
            st(data[r % len(data)], tok)
            _sync(device)
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t)
    out = {"sequences_per_device": n, "seq_len": args.seq}
    for k, st in steps.items():
        s = statistics.median(times[k])
        out[k] = {"s_per_step": s, "tokens_per_s": n * args.seq / s, "model_tflops_per_s": st.flops(n, args.seq) / s / 1e12,
                  "mfu": st.flops(n, args.seq) / s / args.peak}
    out["dwt_vs_student"] = out["dwt"]["s_per_step"] / out["student"]["s_per_step"]
    del steps
    gc.collect()
    for k, teacher in (("student", None), ("dwt", args.teacher)):     # peak memory, one variant alive
        if device.type == "cuda":
            torch.cuda.empty_cache()
        st = Step(cfg, args.student, teacher, args.vocab, device)
        st(data[0], tok)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            st(data[1], tok)
            _sync(device)
            out[k]["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        else:
            out[k]["peak_memory_gib"] = None             # CPU: see bench_train.py (RSS per subprocess)
        del st
        gc.collect()
    if out["student"]["peak_memory_gib"]:
        out["peak_memory_dwt_vs_student"] = out["dwt"]["peak_memory_gib"] / out["student"]["peak_memory_gib"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peak", type=float, default=989e12, help="the GPU's dense bf16 peak FLOP/s (H100/H200 SXM: 989e12)")
    ap.add_argument("--batches", default="16,128", help="sequences per device, comma list")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: checks the script runs (CPU is fine)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    a.student, a.teacher, a.vocab, a.seq = "paper-student", "paper-teacher-4l", 30522, 128
    if a.smoke:
        a.student, a.teacher, a.vocab, a.seq = "tiny-student", "tiny-teacher-4l", 2000, 32
        a.steps, a.warmup, a.batches = 2, 1, "4,8"
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "cpu"
    cfg = load_params("paper")
    print(f"# {name}, torch {torch.__version__}; {a.student} + {a.teacher}, vocab {a.vocab}, seq {a.seq}, bf16; "
          f"peak {a.peak:.3g} FLOP/s", flush=True)
    res = []
    for n in (int(x) for x in a.batches.split(",")):
        r = measure(cfg, a, device, n)
        res.append(r)
        mem = lambda k: "n/a" if r[k]["peak_memory_gib"] is None else f"{r[k]['peak_memory_gib']:.2f} GiB"  # noqa: E731
        print(f"{n:4d} seq/device: student {r['student']['tokens_per_s']:,.0f} tok/s (MFU {r['student']['mfu']:.3f}, "
              f"{mem('student')}); DWT {r['dwt']['tokens_per_s']:,.0f} tok/s (MFU {r['dwt']['mfu']:.3f}, {mem('dwt')}); "
              f"DWT/student step {r['dwt_vs_student']:.3f}"
              + (f", peak memory DWT/student {r['peak_memory_dwt_vs_student']:.3f}" if "peak_memory_dwt_vs_student" in r else ""),
              flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": name, "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
