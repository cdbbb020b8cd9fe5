"""``dwt plan``: every run the studies need and what it costs, without running anything.

Tokens and optimizer steps come from the processed data when its cache exists, else from
the paper's own figure (30M sentences after 1-in-4 sampling) and a stated tokens-per-sentence
assumption. FLOPs follow :func:`dwt_lib.models.train_flops_per_sequence`; GPU-hours assume
A100 bf16 dense peak (312 TFLOP/s) at a stated utilisation. For a GPU profile, :func:`device_time`
adds the expected wall time on the profile's own devices (``launch.peak_tflops`` at
``launch.assumed_mfu``) and of its fine-tuning runs; ``bench/gpu_study.py`` measures both.
"""
from __future__ import annotations

from dwt_lib.config.schema import BYTE_TOKENIZER, Config
from dwt_lib.data.tokens import vocab_size
from dwt_lib.models.encoder import arch_of, train_flops_per_sequence
from dwt_lib.studies.preflight import run_disk_bytes
from dwt_lib.config.tasks import get_task
from dwt_lib.core.paths import cache_root
from dwt_lib.studies.identity import all_run_names, finetune_run, named_run, seed_runs, study_runs, teacher_name
from dwt_lib.data.glue import _resolve, split_size
from dwt_lib.data.prepare import cache_path, data_dir
from dwt_lib.runs.registry import read_json
from dwt_lib.train.steps import global_batch, total_steps

A100_BF16_PEAK = 312e12
ASSUMED_MFU = 0.40
PAPER_SENTENCES = 30e6            # the paper: "a reduced dataset of 30 million sentences"
ASSUMED_TOKENS_PER_SENTENCE = 20  # BERT WordPiece, BookCorpus (~13 words) and Wikipedia (~25) mixed
ASSUMED_BYTES_PER_SENTENCE = 120  # data.tokenizer: bytes (~22 words of ~5.5 bytes with the space)


def _blocks(cfg: Config) -> tuple[int, str]:
    p = data_dir(cfg) / "stats.json"          # the cache, or in read-only mode the exported copy
    if p.exists():
        return int(read_json(p)["train_blocks"]), "measured (processed-data cache)"
    sentences = cfg.data.max_sentences or PAPER_SENTENCES
    per = ASSUMED_BYTES_PER_SENTENCE if cfg.data.tokenizer == BYTE_TOKENIZER else ASSUMED_TOKENS_PER_SENTENCE
    tokens = sentences * per
    return int(tokens / (cfg.data.max_seq_length - 2)), (
        f"estimated: {sentences:.3g} sentences x {per} tokens / "
        f"{cfg.data.max_seq_length - 2} per block (data not prepared yet)")


def make_plan(cfg: Config) -> dict:
    """Rows (one per pre-training run) with steps, tokens, PFLOPs and A100-hours, plus totals."""
    n_blocks, source = _blocks(cfg)
    world = cfg.launch.num_processes
    steps = total_steps(cfg, n_blocks, world)
    L = cfg.data.max_seq_length
    masked = cfg.data.mlm_probability * (L - 2)
    soft_tokens = (L - 2) if cfg.distill.soft_loss_positions == "all" else masked
    vocab = vocab_size(cfg.data)
    arch = arch_of(cfg.model.arch)
    rows, seen = [], {}
    for name in all_run_names(cfg):
        run = named_run(cfg, name)
        if run.id in seen:             # e.g. soft-normal is dwt-weak: trained once
            rows.append({"run": name, "id": run.id, "same_as": seen[run.id]})
            continue
        seen[run.id] = name
        scfg = arch.make_config(run.key["shape"], vocab)
        f = train_flops_per_sequence(scfg, L, soft_tokens if run.key.get("teacher") else masked)
        teacher = None
        if run.key.get("teacher"):
            teacher = named_run(cfg, teacher_name(cfg, name))
            f += train_flops_per_sequence(arch.make_config(teacher.key["shape"], vocab), L, soft_tokens, train=False)
        n = run.key["pretrain"].get("max_steps")
        n = steps if n is None else n              # random-init: 0 steps
        flops = f * n * global_batch(cfg, world)
        rows.append({"run": name, "id": run.id, "size": run.key["size"], "teacher": teacher.name if teacher else "",
                     "steps": n, "tokens": n * global_batch(cfg, world) * L, "pflop": flops / 1e15,
                     "a100_hours": flops / (A100_BF16_PEAK * ASSUMED_MFU) / 3600,
                     "disk_bytes": run_disk_bytes(cfg, run.key["shape"])})
    ft_runs = len(cfg.finetune.tasks) * len(cfg.finetune.seeds)
    plan = {"profile": cfg.profile, "blocks": n_blocks, "blocks_source": source, "world_size": world,
            "machines": cfg.launch.num_machines,
            "global_batch": global_batch(cfg, world), "rows": rows,
            "total_pflop": sum(r.get("pflop", 0) for r in rows),
            "total_a100_hours": sum(r.get("a100_hours", 0) for r in rows),
            "total_disk_bytes": sum(r.get("disk_bytes", 0) for r in rows),
            "finetune_runs_per_snapshot": ft_runs, "assumed_mfu": ASSUMED_MFU}
    if cfg.launch.device != "cpu":      # CPU profiles: the A100-hours above are the only device figure
        plan["device_time"] = device_time(cfg, plan)
    return plan


def _devices(plan: dict) -> str:
    """``8 GPUs`` on one machine; ``4 machine(s) x 8 device(s)`` on several (launch.num_machines)."""
    m, world = plan.get("machines", 1), plan["world_size"]
    return f"{m} machine(s) x {world // m} device(s)" if m > 1 else f"{world} device(s)"


def format_plan(plan: dict) -> str:
    """The plan as a table a person reads before spending GPU-hours."""
    out = [f"profile {plan['profile']}: {plan['blocks']:,} training blocks ({plan['blocks_source']}), "
           f"{plan['world_size']} process(es), global batch {plan['global_batch']}",
           f"{'run':<22} {'size':<20} {'teacher':<22} {'steps':>10} {'tokens':>10} {'FLOP':>9} {'A100-h':>8}"]
    for r in plan["rows"]:
        if "same_as" in r:
            out.append(f"{r['run']:<22} = {r['same_as']} (same settings, trained once)")
            continue
        out.append(f"{r['run']:<22} {r['size']:<20} {r['teacher']:<22} {r['steps']:>10,} {r['tokens']:>10.3g} "
                   f"{r['pflop'] * 1e15:>9.2e} {r['a100_hours']:>8.2f}")
    out.append(f"total: {plan['total_pflop'] * 1e15:.3g} FLOP = {plan['total_a100_hours']:.2f} A100-hours at "
               f"{plan['assumed_mfu']:.0%} of the 312 TFLOP/s bf16 peak "
               f"(= {plan['total_a100_hours'] / plan['world_size']:.2f} h on {_devices(plan)}); plus "
               f"{plan['finetune_runs_per_snapshot']} "
               f"fine-tuning runs per pre-training snapshot")
    out.append(f"disk: {plan['total_disk_bytes'] / 1e9:.2f} GB for the checkpoints (last, previous, one being "
               f"written) and models of every run; runs check for room before they start")
    if "device_time" in plan:
        out.append(format_device_time(plan["device_time"]))
    return "\n".join(out)


# ----------------------------------------------------------------------------- data preparation

# Words in the paper's corpora when their data is not prepared here: BERT's own figures (Devlin et al.:
# BooksCorpus 800M words, English Wikipedia 2,500M). Keyed by Hub id.
ASSUMED_CORPUS_WORDS = {"wikimedia/wikipedia": 2.5e9, "bookcorpus/bookcorpus": 0.8e9}
# Words per row of those corpora, for a profile that caps documents (max_documents): Wikipedia ~6.4M
# articles for 2.5B words; BookCorpus 74M one-sentence rows for 0.8B words.
ASSUMED_WORDS_PER_ROW = {"wikimedia/wikipedia": 390.0, "bookcorpus/bookcorpus": 10.8}
# bench/bench_data_scale.py on the offline mirror (BERT tokenizer, num_proc 1): words per CPU-second of the
# build (load-independent; the wall-clock figures were taken on a shared, busy machine). Used until this
# machine has prepared data of its own to time.
BENCH_WORDS_PER_S_PER_PROC = 180_000
BENCH_TOKENS_PER_WORD = 1.34
ASSUMED_PARALLEL_EFFICIENCY = 0.85    # an assumption: the 2-core bench ran on a loaded machine


def _latest_stats(root) -> dict | None:
    import json
    best = None
    for p in root.glob("data-*/stats.json"):
        try:
            s = json.loads(p.read_text())
            if s.get("num_proc") and s.get("words_before_sampling", 0) >= 1e6:     # big enough to time
                if best is None or p.stat().st_mtime > best[0]:
                    best = (p.stat().st_mtime, s)
        except (OSError, ValueError):
            continue
    return best[1] if best else None


def _corpus_words(c, default_max_documents) -> float | None:
    """Assumed words read from one corpus: the whole corpus, or its first ``max_documents`` documents
    (a document is ``rows_per_document`` rows when set)."""
    words = ASSUMED_CORPUS_WORDS.get(c.id)
    cap = c.max_documents if c.max_documents is not None else default_max_documents
    if words is None or cap is None:
        return words
    return min(words, cap * (c.rows_per_document or 1) * ASSUMED_WORDS_PER_ROW[c.id])


def data_prep_estimate(cfg: Config, cores: int | None = None) -> dict:
    """Words, tokens, block bytes on disk and wall time on ``cores`` processes for preparing ``cfg.data``.

    Exact when this data is prepared (its stats); otherwise words from :data:`ASSUMED_CORPUS_WORDS` (or the
    profile's document caps times :data:`ASSUMED_WORDS_PER_ROW`) and
    throughput measured by the most recent preparation in the cache (else the bench's figure).
    """
    import os

    dc = cfg.data
    cores = cores or dc.num_proc or os.cpu_count() or 1
    p = cache_path(dc)
    if (p / "stats.json").exists():
        import json
        s = json.loads((p / "stats.json").read_text())
        secs = sum(s["seconds"].values())
        return {"source": "measured: this data is prepared", "words": s["words_before_sampling"],
                "tokens": s["tokens_after_sampling"], "blocks_bytes": (s["train_blocks"] + s["validation_blocks"])
                * dc.max_seq_length * (2 if s["vocab_size"] <= 65536 else 4), "cores": s.get("num_proc") or 1,
                "hours": secs / 3600, "words_per_s_per_proc": s["words_before_sampling"] / secs / (s.get("num_proc") or 1)}
    known = [_corpus_words(c, dc.max_documents) for c in dc.corpora]
    words = None if None in known else float(sum(known))
    last = _latest_stats(cache_root())
    if last:
        rate = last["words_before_sampling"] / sum(last["seconds"].values()) / last["num_proc"]
        tpw, how = last["tokens_per_word"], f"throughput of the last preparation here ({last['hash']})"
    else:
        rate, tpw, how = BENCH_WORDS_PER_S_PER_PROC, BENCH_TOKENS_PER_WORD, "throughput from bench/RESULTS.md"
    out = {"source": f"estimated: corpus words assumed (BERT's figures), {how}", "words": words, "cores": cores,
           "words_per_s_per_proc": rate}
    if words is not None:
        tokens = words * tpw / dc.sample_every
        hours = lambda n: words / (rate * n * (1 if n == 1 else ASSUMED_PARALLEL_EFFICIENCY)) / 3600
        out.update(tokens=tokens, blocks_bytes=tokens / (dc.max_seq_length - 2) * dc.max_seq_length * 2,
                   hours=hours(cores), hours_64=hours(64))
    return out


def format_data_estimate(e: dict) -> str:
    """One line: what preparing the data costs (or cost)."""
    if e.get("words") is None:
        return (f"data preparation: corpus size unknown until prepared ({e['words_per_s_per_proc']:,.0f} words/s "
                f"per process measured); run `dwt plan` after preparing a sample")
    return (f"data preparation ({e['source']}): {e['words']:.3g} words -> {e['tokens']:.3g} tokens, blocks "
            f"{e['blocks_bytes'] / 1e9:.2f} GB on disk, {e['hours']:.2f} h on {e['cores']} core(s)"
            + (f" ({e['hours_64']:.2f} h on 64)" if "hours_64" in e else "") + " "
            f"({e['words_per_s_per_proc']:,.0f} words/s per process)")


# ----------------------------------------------------------------------------- wall time on the profile's devices

#: A fine-tuning step of a small BERT on a GPU is bound by kernel launches and host syncs, not by FLOPs:
#: about this long at batch 32 whatever the width up to ~512 (bench/gpu_study.py measures it).
ASSUMED_FINETUNE_STEP_S = 0.005
def finetune_jobs(cfg: Config) -> list[tuple[str, float, str, int]]:
    """Every distinct fine-tuning run the three studies need: (pre-training run, fraction, task, seed).

    Teacher quality: each of its runs at the end of pre-training on every task; soft weight, remapping and
    notebook 06 (beyond): each snapshot on the study tasks; every pre-training seed of an arm (``student:s43``);
    with ``finetune.lr_grid``, the student's extra grid runs (counted, not named exactly: which grid lr is chosen
    is known only after them). Two names of one run (``soft-normal`` = ``dwt-weak``) count once, as the
    registry trains them once."""
    tasks = list(cfg.finetune.tasks)
    over = [t for t in cfg.studies.soft_weight_tasks if t in tasks] or tasks
    fractions = sorted(cfg.pretrain.snapshot_fractions)
    wanted = [(r, 1.0, t) for n in study_runs(cfg, "teacher_quality") for r in seed_runs(cfg, n) for t in tasks]
    wanted += [(r, f, t) for s in ("soft_weight", "param_remap", "beyond") for n in study_runs(cfg, s)
               for r in seed_runs(cfg, n) for f in fractions for t in over]
    jobs, seen = [], set()
    ft = cfg.finetune
    for task in ([] if not ft.lr_grid else [t for t in tasks if t not in ft.lr_per_task]):
        for lr in ft.lr_grid[1:]:      # lr selection on the student (one grid lr coincides with its own run)
            jobs.append((f"student[lr={lr:g}]", 1.0, task, ft.seeds[0]))
    for name, frac, task in wanted:
        for seed in cfg.finetune.seeds:
            rid = finetune_run(cfg, name, task, seed, frac).id
            if rid not in seen:
                seen.add(rid)
                jobs.append((name, frac, task, seed))
    return jobs


def finetune_steps(cfg: Config, task: str) -> int:
    """Optimizer steps of one fine-tuning run on ``task`` (as :func:`dwt_lib.train.finetune.finetune` counts them)."""
    import math
    from pathlib import Path

    ft = cfg.finetune
    # the size in the local copy when there is one; else the Hub's (a plan downloads nothing)
    n = split_size(task, "train", ft.source) if Path(_resolve(ft.source)).is_dir() else None
    n = n if n is not None else get_task(task).train_size
    if ft.max_train_examples is not None:
        n = min(n, ft.max_train_examples)
    epochs = float(ft.epochs_per_task.get(task, ft.epochs))
    return max(1, math.ceil(epochs * math.ceil(n / ft.batch_size)))


def device_time(cfg: Config, plan: dict) -> dict:
    """Expected wall time on the profile's devices (``launch``): pre-training from its FLOPs,
    ``seconds = FLOPs / (assumed_mfu x peak_tflops x 1e12 x num_processes)``; fine-tuning from its
    optimizer steps at :data:`ASSUMED_FINETUNE_STEP_S` each, ``finetune_workers`` runs at a time
    (assumed to overlap fully). Data preparation and notebook start-up are not included."""
    la = cfg.launch
    rate = la.assumed_mfu * la.peak_tflops * 1e12 * la.num_processes
    pretrain_s = plan["total_pflop"] * 1e15 / rate
    steps = {t: finetune_steps(cfg, t) for t in cfg.finetune.tasks}
    jobs = finetune_jobs(cfg)
    ft_steps = sum(steps[t] for _, _, t, _ in jobs)
    ft_s = ft_steps * ASSUMED_FINETUNE_STEP_S / la.finetune_workers
    return {"peak_tflops": la.peak_tflops, "assumed_mfu": la.assumed_mfu, "devices": la.num_processes,
            "machines": la.num_machines,
            "pretrain_s": pretrain_s, "finetune_runs": len(jobs), "finetune_steps": ft_steps,
            "finetune_steps_per_task": steps, "finetune_step_s": ASSUMED_FINETUNE_STEP_S,
            "finetune_workers": la.finetune_workers, "finetune_s": ft_s, "total_s": pretrain_s + ft_s}


def format_device_time(d: dict) -> str:
    m = lambda s: f"{s:,.0f} s = {s / 60:.1f} min"  # noqa: E731
    on = _devices({"machines": d.get("machines", 1), "world_size": d["devices"]})
    several = " (no cost assumed for traffic between machines)" if d.get("machines", 1) > 1 else ""
    return (f"expected on {on} of {d['peak_tflops']:g} TFLOP/s bf16 peak{several} at an assumed "
            f"{d['assumed_mfu']:.0%} MFU: pre-training {m(d['pretrain_s'])}; fine-tuning {d['finetune_runs']} runs, "
            f"{d['finetune_steps']:,} steps at an assumed {d['finetune_step_s'] * 1e3:g} ms, "
            f"{d['finetune_workers']} at a time: {m(d['finetune_s'])}; total {m(d['total_s'])} "
            f"(plus data preparation and notebook start-up)")
