"""Which runs each study needs, built from the profile, and the one function that launches them.

Run names (``dwt pretrain --run NAME``):

- ``teacher-<role>``: a teacher trained alone (MLM only), role from ``model.teachers``
- ``student``: the standalone student
- ``random-init``: the student's shape as initialised, with no pre-training (``pretrain.max_steps: 0``): the
  control row of the GLUE tables, what fine-tuning reaches without pre-training
- ``dwt-<role>``: the student distilled from that teacher with the profile's a_s (Fig. 2)
- ``soft-<variant>``: the student distilled from the weak teacher with a_s from
  ``studies.soft_weight.<variant>`` (Fig. 3)
- ``remap-<role>``: DWT from that teacher, student initialised by parameter remapping (Fig. 4)
- ``beyond-<arm>``: notebook 06's arms, settings from ``studies.beyond.<arm>`` (:mod:`dwt_lib.config.arms`):
  a teacher-aware or KI soft weight, another temperature, label-smoothed targets, growth from the teacher

- ``<name>:s<seed>``: that run pre-trained with another seed (``pretrain.seed``), e.g.
  ``student:s43``; a DWT run keeps its teacher (the profile's, at ``pretrain.seed``). The seeds of
  an arm come from ``studies.pretrain_seeds`` (:func:`seed_runs`); they measure the spread over
  pre-training, the largest source of variance.

A run's identity is the hash of what determines it, not its name: ``soft-normal`` and
``dwt-weak`` are one run when their settings agree, and it is trained once.
"""
from __future__ import annotations

import os
from typing import Optional

from dwt_lib.config import arms as beyond
from dwt_lib.runs import integrity, registry as runs
from dwt_lib.studies import nodes
from dwt_lib.train import finetune as finetuning, pretrain as pretraining
from dwt_lib.config.schema import Config
from dwt_lib.core.hashing import jsonable
from dwt_lib.config.arms import NO_PRETRAINING, SEED_MARK, arm_names, split_seed
from dwt_lib.core.errors import PreflightError, UnknownNameError
from dwt_lib.runs.registry import Run, model_folders, registry_root
from dwt_lib.core.io import atomic_write_json
from dwt_lib.config.load import config_from_dict
from dwt_lib.config.sizes import resolve_size
from dwt_lib.config.tasks import task_settings
from dwt_lib.data.prepare import prepare_pretraining_data, run_data_hash


#: Settings that say how often a run logs, evaluates and checkpoints, not what it learns: they are
#: left out of its identity, so changing them resumes the same run. (Evaluation masks with its own
#: generator in eval mode and checkpoints only read the RNG state, so neither moves the training
#: RNG: tests/test_faults.py checks that the weights come out bit-identical.)
BOOKKEEPING = ("log_every", "eval_every", "eval_batches", "checkpoint_every", "num_workers")


def _base_key(cfg: Config, size: str) -> dict:
    # "shape" (the resolved BertConfig keywords) makes a profile's model.sizes part of the identity:
    # redefining a size's width in a profile is a different run, under the same name.
    # "data" is the processed data's hash, not just cfg.data: it also changes with the data code version
    # (e.g. a new tokenizer training) and with the dataset actually read (Hub, mirror stand-in, sample),
    # each of which gives other token ids, so a run on other data never resumes or reuses this one. In read-only
    # mode the dataset read is the one recorded at export (run_data_hash): no mirror, same ids.
    # "arch" and "initializer_range" enter only when not at their defaults (bert, the arch's own), so every run
    # from before they existed keeps its id (tests/test_golden_ids.py).
    pretrain = {k: v for k, v in jsonable(cfg.pretrain).items() if k not in BOOKKEEPING}
    key = {"size": size, "shape": resolve_size(size, cfg.model.sizes), "data": run_data_hash(cfg), "pretrain": pretrain,
           "dropout": [cfg.model.hidden_dropout_prob, cfg.model.attention_probs_dropout_prob],
           "world_size": cfg.launch.num_processes}
    if cfg.model.arch != "bert":
        key["arch"] = cfg.model.arch
    if cfg.model.initializer_range is not None:
        key["initializer_range"] = cfg.model.initializer_range
    return key


def pretrain_run(cfg: Config, name: str, size: str, teacher: Optional[Run] = None, init: str = "random",
                 alpha_soft: Optional[dict] = None, temperature: Optional[dict] = None,
                 target: Optional[dict] = None, grow: Optional[dict] = None) -> Run:
    """A pre-training run; with a teacher (or a ``target`` standing in for one: notebook 06's smoothed
    labels) it is a DWT run whose settings come from ``cfg.distill`` unless given here.

    ``target`` and ``grow`` enter the key only when given, so every run without them keeps the id it
    had before they existed (tests/test_beyond.py pins this)."""
    key = _base_key(cfg, size)
    key["init"] = init
    key["teacher"] = teacher.id if teacher else None
    distilled = teacher is not None or target is not None
    kind = "teacher" if name.startswith("teacher-") else ("dwt" if distilled else "student")
    if distilled:
        d = cfg.distill
        key.update(alpha_hard=d.alpha_hard, alpha_soft=alpha_soft or d.alpha_soft,
                   temperature=temperature or d.temperature,
                   soft_loss_positions=d.soft_loss_positions, scale_by_t2=d.scale_by_t2)
    if target is not None:
        key["target"] = target
    if grow is not None:
        key["grow"] = grow
    return Run(kind=kind, name=name, key=jsonable(key), root=registry_root(cfg))


def pretrain_seed(cfg: Config, name: str) -> int:
    """The pre-training seed a run name trains with."""
    seed = split_seed(name)[1]
    return cfg.pretrain.seed if seed is None else seed


def run_config(cfg: Config, name: str) -> Config:
    """The config a run trains with: the profile's, with ``pretrain.seed`` set from the name's seed (and no
    training steps for ``random-init``)."""
    seed = pretrain_seed(cfg, name)
    out = cfg if seed == cfg.pretrain.seed else cfg.replace(**{"pretrain.seed": seed})
    return out.replace(**{"pretrain.max_steps": 0}) if split_seed(name)[0] == NO_PRETRAINING else out


def seed_runs(cfg: Config, name: str) -> list[str]:
    """An arm's pre-training runs: ``name`` itself (at ``pretrain.seed``), then one ``name:s<seed>`` per
    other seed in ``studies.pretrain_seeds`` (listed for this name or for a run with the same identity:
    seeds given for ``dwt-weak`` also count for ``soft-normal`` when the two are one run)."""
    listed = cfg.studies.pretrain_seeds
    seeds = listed.get(name)
    if seeds is None and listed:
        rid = named_run(cfg, name).id
        seeds = next((v for k, v in listed.items() if named_run(cfg, k).id == rid), [])
    return [name] + [f"{name}{SEED_MARK}{s}" for s in dict.fromkeys(seeds or []) if s != cfg.pretrain.seed]


def named_run(cfg: Config, name: str) -> Run:
    """The :class:`Run` for a run name (see the module docstring); clear error for an unknown name."""
    base, seed = split_seed(name)
    if seed is not None:
        run = named_run(cfg, base)
        if seed == cfg.pretrain.seed:
            return Run(kind=run.kind, name=name, key=run.key, root=run.root)
        seeded = named_run(run_config(cfg, name), base)
        # the teacher stays the profile's: pre-training seeds vary the student, not what it learns from
        return Run(kind=run.kind, name=name, key=dict(seeded.key, teacher=run.key["teacher"]), root=run.root)
    teachers = cfg.model.teachers
    if name.startswith("teacher-") and name[8:] in teachers:
        return pretrain_run(cfg, name, teachers[name[8:]])
    if name == "student":
        return pretrain_run(cfg, name, cfg.model.student)
    if name == NO_PRETRAINING:
        return pretrain_run(run_config(cfg, name), name, cfg.model.student)
    for prefix, init in (("dwt-", "random"), ("remap-", "remap")):
        if name.startswith(prefix) and name[len(prefix):] in teachers:
            role = name[len(prefix):]
            return pretrain_run(cfg, name, cfg.model.student, named_run(cfg, f"teacher-{role}"), init)
    if name.startswith("soft-") and name[5:] in cfg.studies.soft_weight:
        return pretrain_run(cfg, name, cfg.model.student, named_run(cfg, teacher_name(cfg, name)),
                            alpha_soft=cfg.studies.soft_weight[name[5:]])
    if name.startswith(beyond.PREFIX) and name[len(beyond.PREFIX):] in cfg.studies.beyond:
        kw = beyond.run_settings(cfg, name[len(beyond.PREFIX):])
        role = kw.pop("teacher_role")
        return pretrain_run(cfg, name, cfg.model.student, named_run(cfg, f"teacher-{role}") if role else None, **kw)
    raise UnknownNameError(f"unknown run name {name!r} for profile {cfg.profile}", "--run",
                           f"known: {', '.join(all_run_names(cfg))}")


def teacher_name(cfg: Config, name: str) -> Optional[str]:
    """The teacher run a DWT run distils from (None for runs without a teacher)."""
    name = split_seed(name)[0]
    if name.startswith(("dwt-", "remap-")):
        return "teacher-" + name.split("-", 1)[1]
    if name.startswith("soft-"):
        return f"teacher-{cfg.studies.soft_weight_teacher}"
    if name.startswith(beyond.PREFIX) and name[len(beyond.PREFIX):] in cfg.studies.beyond:
        role = beyond.run_settings(cfg, name[len(beyond.PREFIX):])["teacher_role"]
        return f"teacher-{role}" if role else None
    return None


def all_run_names(cfg: Config) -> list[str]:
    """Every run the three studies need, teachers first (dependencies before dependants); an arm's
    other pre-training seeds (:func:`seed_runs`) right after it."""
    return [r for n in arm_names(cfg) for r in seed_runs(cfg, n)]


def study_runs(cfg: Config, study: str) -> list[str]:
    """Run names one study needs: ``teacher_quality``, ``soft_weight``, ``param_remap`` or ``beyond``
    (notebook 06: the runs its arms are compared with, then the arms)."""
    if study == "teacher_quality":
        return ([f"teacher-{r}" for r in cfg.studies.teacher_quality] + ["student"]
                + [f"dwt-{r}" for r in cfg.studies.teacher_quality] + [NO_PRETRAINING])
    if study == "soft_weight":
        return [f"soft-{v}" for v in cfg.studies.soft_weight]
    if study == "param_remap":
        t = cfg.studies.param_remap_teacher
        return [f"remap-{t}", f"dwt-{t}"]
    if study == "beyond":
        against = [n for spec in cfg.studies.beyond.values() for n in spec.get("against", [])]
        arms = [beyond.run_name(a) for a in cfg.studies.beyond]
        return list(dict.fromkeys([n for n in against if n not in arms] + arms))
    raise ValueError(f"unknown study {study!r} (teacher_quality, soft_weight, param_remap, beyond)")


# ----------------------------------------------------------------------------- launching

def ensure_pretrained(cfg: Config, name: str, progress: bool = True) -> dict:
    """Result of a pre-training run, training it (and its teacher) first if needed.

    One process: trained in this process. More (``launch.num_processes > 1``): the run is
    handed to ``accelerate launch`` with ``launch.accelerate_config``; this process holds the
    run's lock and writes its result when the workers finish.
    """
    run = named_run(cfg, name)
    if not run.finished():
        check_device(cfg)
    if run.key.get("teacher") and not (run.finished() and pretrained_problem(run, run.result()) is None):
        ensure_pretrained(cfg, teacher_name(cfg, name), progress)     # a missing teacher model is restored here
    rcfg = run_config(cfg, name)           # pretrain.seed from the name (student:s43)

    def work(r: Run) -> dict:
        atomic_write_json(r.dir / "config.json", rcfg.to_dict())
        if rcfg.launch.num_processes == 1 and rcfg.launch.num_machines == 1:
            return pretraining.train(rcfg, r, progress=progress)      # through the module: tests patch it
        return _launch_workers(rcfg, r)

    def check(r: Run, res: dict) -> Optional[str]:
        return pretrained_problem(r, res) or eval_set_problem(rcfg, res)

    return runs.ensure(run, rcfg, work, check=check)   # provenance: the seed it trained with


def eval_set_problem(cfg: Config, res: dict) -> Optional[str]:
    """A finished run whose final held-out loss was measured on another held-out set than ``pretrain.eval_batches``
    now asks for (a bookkeeping setting, not part of its identity): it is evaluated again from its final
    checkpoint (nothing retrained), so every table compares losses on one set. Results from before this record
    (no ``eval_batches`` in ``final_eval``) are kept."""
    was = (res.get("final_eval") or {}).get("eval_batches")
    if was is not None and was != cfg.pretrain.eval_batches:
        return (f"its held-out loss was measured on {was} batches and pretrain.eval_batches is now "
                f"{cfg.pretrain.eval_batches}")
    return None


def pretrained_problem(run: Run, res: dict) -> Optional[str]:
    """What a finished pre-training run lacks (its model, a snapshot, its metrics) or has damaged (a weight file
    whose sha256 differs from the one recorded at save: :mod:`dwt_lib.runs.integrity`), or None. An exported run
    is checked on the models it kept (:func:`~dwt_lib.runs.registry.model_folders`)."""
    if "final_eval" not in res:
        return "its result has no final_eval"
    return integrity.folders_problem(run.dir, model_folders(run.dir, res))


def _launch_workers(cfg: Config, run: Run) -> dict:
    """``accelerate launch`` of the run's workers (:func:`dwt_lib.studies.nodes.launch`); on several machines this is node 0,
    which builds the data cache first so that no node waits for it inside a collective (the others poll for the
    run's announcement instead)."""
    if cfg.launch.num_machines > 1:
        prepare_pretraining_data(cfg)
    nodes.launch(cfg, run.dir, run.name)
    return runs.read_json(run.dir / "final.json")


def finetune_run(cfg: Config, pretrain_name: str, task: str, seed: int, fraction: float = 1.0) -> Run:
    """The fine-tuning run of one pre-training snapshot on one task with one seed."""
    base = named_run(cfg, pretrain_name)
    key = jsonable({"pretrain": base.id, "fraction": round(fraction, 4), "task": task, "seed": seed,
                     "finetune": task_settings(cfg.finetune, task)})
    return Run(kind="finetune", name=f"{pretrain_name}@{fraction:.2f}/{task}/s{seed}", key=key,
               root=registry_root(cfg))


def ensure_finetuned(cfg: Config, pretrain_name: str, task: str, seed: int, fraction: float = 1.0,
                     progress: bool = False) -> dict:
    """Result of fine-tuning a pre-training run's snapshot on a GLUE task (trains what is missing)."""
    base_res = ensure_pretrained(cfg, pretrain_name)
    snap = base_res.get("snapshots", {}).get(f"{fraction:.2f}")
    if snap is None:
        raise ValueError(f"run {pretrain_name} has no snapshot at fraction {fraction:.2f} "
                         f"(pretrain.snapshot_fractions: {list(cfg.pretrain.snapshot_fractions)})")
    model_dir = named_run(cfg, pretrain_name).dir / snap
    run = finetune_run(cfg, pretrain_name, task, seed, fraction)

    def work(r: Run) -> dict:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(model_dir)
        device = "cpu" if cfg.launch.device == "cpu" else "auto"
        res = finetuning.finetune(model_dir, task, cfg.finetune, tok, seed, device=device, progress=progress)
        res.update(pretrain_run=pretrain_name, fraction=fraction)
        return res

    return runs.ensure(run, cfg, work, log=(print if progress else (lambda s: None)),
                       check=lambda r, res: None if "score" in res else "its result has no score")


def study_scores(cfg: Config, names: list[str], tasks: list[str], fractions=(1.0,), progress: bool = True):
    """Fine-tuning results for every (run, fraction, task, seed), training what is missing.

    With ``launch.finetune_workers > 1`` the missing fine-tuning runs go to that many worker
    processes first (after the pre-training runs, trained here); the registry's locks and atomic
    writes make that safe, and the results are the same as one at a time.

    Returns a list of result dicts (each with ``pretrain_run``, ``fraction``, ``task``, ``seed``,
    ``score``, ``metrics``), ready for :func:`dwt_lib.train.finetune.glue_scores` or a DataFrame.
    """
    cfg = with_selected_lrs(cfg, tasks, progress)     # finetune.lr_grid: lrs chosen on the student first
    if cfg.launch.finetune_workers > 1:
        for name in names:
            ensure_pretrained(cfg, name, progress)
        jobs = [(n, t, s, fr) for n in names for fr in fractions for t in tasks for s in cfg.finetune.seeds]
        finetune_parallel(cfg, jobs, cfg.launch.finetune_workers, progress)
    out, reused = [], 0
    for name in names:
        for fr in fractions:
            for task in tasks:
                for seed in cfg.finetune.seeds:
                    done = finetune_run(cfg, name, task, seed, fr).finished()
                    # the same run may go by two names (soft-normal = dwt-weak): label it as asked
                    r = dict(ensure_finetuned(cfg, name, task, seed, fr), pretrain_run=name, fraction=fr,
                             pretrain_seed=pretrain_seed(cfg, name))
                    reused += done
                    if progress and not done:        # a line per run trained now; the reused are counted
                        print(f"  {name:<22} @{fr:.2f} {task:<6} seed {seed}: {r['score']:.2f}")
                    out.append(r)
    if progress:
        print(f"{len(out)} fine-tuning results: {len(out) - reused} trained now, {reused} reused from the registry "
              f"(the scores are in the tables below)")
    return out


def selected_lrs(cfg: Config, tasks: list[str], progress: bool = False) -> dict:
    """Learning rates chosen from ``finetune.lr_grid`` on the standalone student only.

    For each task in ``tasks`` that ``finetune.lr_per_task`` does not fix, the ``student`` run (end of
    pre-training) is fine-tuned with the first fine-tuning seed at every grid lr, and the lr with the best
    validation score is chosen (a tie goes to the earlier grid entry); every model then fine-tunes that task
    at that lr. The grid runs are ordinary registry runs: the chosen one is the student's own seed-1 run.
    Returns ``{task: {"lr", "scores": {lr: score}, "run", "seed"}}`` (empty without a grid)."""
    ft = cfg.finetune
    out = {}
    for task in tasks:
        if not ft.lr_grid or task in ft.lr_per_task:
            continue
        scores = {}
        for lr in ft.lr_grid:
            c = cfg.replace(**{"finetune.lr_per_task": {**ft.lr_per_task, task: lr}})
            scores[lr] = ensure_finetuned(c, "student", task, ft.seeds[0])["score"]
            if progress:
                print(f"  lr selection, student {task:<6} lr {lr:g}: {scores[lr]:.2f}")
        best = max(ft.lr_grid, key=lambda lr: (scores[lr], -ft.lr_grid.index(lr)))
        out[task] = {"lr": best, "scores": {f"{lr:g}": v for lr, v in scores.items()},
                     "run": "student", "seed": ft.seeds[0]}
    return out


def with_lrs(cfg: Config, selection: dict) -> Config:
    """``cfg`` with ``finetune.lr_per_task`` completed from a :func:`selected_lrs` result (unchanged if empty);
    its tasks are then fixed, so a later selection on it trains and reads nothing."""
    if not selection:
        return cfg
    return cfg.replace(**{"finetune.lr_per_task": {**cfg.finetune.lr_per_task,
                                                   **{t: s["lr"] for t, s in selection.items()}}})


def with_selected_lrs(cfg: Config, tasks: list[str], progress: bool = False) -> Config:
    """``cfg`` with ``finetune.lr_per_task`` completed from :func:`selected_lrs` (unchanged without a grid)."""
    return with_lrs(cfg, selected_lrs(cfg, tasks, progress))


def finetune_parallel(cfg: Config, jobs: list[tuple], workers: int, progress: bool = True) -> None:
    """Run the unfinished fine-tuning ``jobs`` ((run name, task, seed, fraction)) in ``workers``
    processes at once (spawned: each opens its own CUDA context). A fine-tuning step of a small BERT
    is bound by kernel launches and host syncs, so on a GPU several processes overlap well; each
    gets an equal share of the cores. The pre-training runs must be finished."""
    import concurrent.futures as cf
    import multiprocessing as mp
    todo, seen = [], set()
    for name, task, seed, fr in jobs:
        run = finetune_run(cfg, name, task, seed, fr)
        if not run.finished() and run.id not in seen:      # soft-normal = dwt-weak: once
            seen.add(run.id)
            todo.append((name, task, seed, fr))
    if not todo:
        return
    workers = min(workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if progress:
        print(f"[dwt] fine-tuning {len(todo)} runs, {workers} at a time", flush=True)
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(_finetune_job, cfg.to_dict(), job, threads) for job in todo]
        for f in cf.as_completed(futs):
            f.result()                       # re-raise a worker's error here


def _finetune_job(cfg_dict: dict, job: tuple, threads: int) -> float:
    import torch
    torch.set_num_threads(threads)
    name, task, seed, fr = job
    return ensure_finetuned(config_from_dict(cfg_dict), name, task, seed, fr)["score"]


def check_device(cfg: Config) -> None:
    """Fail at once, with the fix, when the profile asks for CUDA and this machine has none
    (a :class:`~dwt_lib.core.errors.PreflightError`: the CLI prints it as one line)."""
    if cfg.launch.device != "cuda":
        return
    import torch
    if not torch.cuda.is_available():
        raise PreflightError(
            f"profile {cfg.profile} sets launch.device: cuda, but torch {torch.__version__} sees no CUDA GPU here",
            "launch.device",
            f"run it on a GPU machine (`make reproduce PROFILE={cfg.profile}` installs a CUDA build of torch when "
            f"nvidia-smi is present), or add --set launch.device=cpu to run it on the CPU anyway (many hours; "
            f"`dwt plan --profile {cfg.profile}` shows the FLOPs)")
