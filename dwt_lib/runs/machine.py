"""Which machine a result was computed on: what ``dwt verify`` compares when two runs of one config differ."""
from __future__ import annotations

import os
import platform
import sys

ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "asimd", "sve")     # what decides which kernels torch picks (x86, then ARM)


def machine() -> dict:
    """Where a result was computed, for comparing reruns (``dwt verify``): CPU model, the instruction-set flags
    that select torch's kernels, logical cores, torch's intra-op threads, and the GPUs (name, count) when torch
    is loaded and sees any."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                k, _, v = ln.partition(":")
                if k.strip() == "model name" and cpu in ("", platform.machine(), platform.processor()):
                    cpu = v.strip()
                elif k.strip() in ("flags", "Features") and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    out = {"cpu": cpu, "isa": [f for f in ISA_FLAGS if f in flags], "cpus": os.cpu_count(), "torch_threads": None,
           "gpu": None, "gpu_count": 0}
    torch = sys.modules.get("torch")         # not imported here: a result written without torch says so
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    return out
