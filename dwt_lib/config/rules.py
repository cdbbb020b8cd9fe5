"""Impossible values in a loaded profile, per section: one :class:`~dwt_lib.config.ConfigError` naming the file,
the key path, what was expected and what was found (``params/mine.yaml: pretrain.lr: expected a positive number,
got -1``). Called by :func:`dwt_lib.config.load_params` for every section it builds; the types themselves are
checked while building (``config._coerce``)."""
from __future__ import annotations

import math
import re
from typing import Any

from dwt_lib.config.arms import arm_names, check_arms, seed_ok
from dwt_lib.config.schedules import check_schedule
from dwt_lib.config.sizes import ARCHS, SIZES, resolve_size, size_from_spec
from dwt_lib.config.tasks import TASKS
from dwt_lib.core.errors import ConfigError, SizeError


# A profile name is a folder name under the outputs folder: no separators, no leading dot (".." would leave it).
PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+ -]*")


def _fail(src: str, key: str, what: str, got: Any) -> None:
    raise ConfigError(f"{src}: {key}: expected {what}, got {got!r}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_values(obj: Any, src: str, prefix: str) -> None:
    """Impossible values, per section (told apart by class name: the schema calls these rules, so they do
    not import it)."""
    rule = _SECTIONS.get(type(obj).__name__)
    if rule is not None:
        rule(obj, src, prefix)


def _pretrain(obj, src: str, p: str) -> None:
    for k in ("lr", "epochs", "adam_eps", "max_grad_norm"):
        if getattr(obj, k) <= 0:
            _fail(src, p + k, "a positive number", getattr(obj, k))
    for k in ("batch_size_per_device", "grad_accum_steps", "log_every", "eval_every",
              "checkpoint_every", "eval_batches"):
        if getattr(obj, k) < 1:
            _fail(src, p + k, "an integer >= 1", getattr(obj, k))
    if obj.max_steps is not None and obj.max_steps < 0:   # 0: no training, the model as initialised (random-init)
        _fail(src, p + "max_steps", "an integer >= 0 or null (0: the initial model, no training)", obj.max_steps)
    if not 0 <= obj.warmup_fraction < 1:
        _fail(src, p + "warmup_fraction", "a fraction in [0, 1)", obj.warmup_fraction)
    if obj.weight_decay < 0:
        _fail(src, p + "weight_decay", "a number >= 0", obj.weight_decay)
    if obj.precision not in ("fp32", "bf16"):
        _fail(src, p + "precision", "one of fp32, bf16", obj.precision)
    if not seed_ok(obj.seed):
        _fail(src, p + "seed", "an integer seed in [0, 2^32)", obj.seed)
    for k in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(obj, k) < 1:
            _fail(src, p + k, "a number in [0, 1)", getattr(obj, k))
    if any(not 0 < f <= 1 for f in obj.snapshot_fractions):
        _fail(src, p + "snapshot_fractions", "fractions in (0, 1]", list(obj.snapshot_fractions))


def _data(obj, src: str, p: str) -> None:
    if obj.sample_every < 1:
        _fail(src, p + "sample_every", "an integer >= 1", obj.sample_every)
    if not 0 < obj.mlm_probability < 1:
        _fail(src, p + "mlm_probability", "a probability in (0, 1)", obj.mlm_probability)
    if not 0 < obj.validation_fraction < 1:
        _fail(src, p + "validation_fraction", "a fraction in (0, 1)", obj.validation_fraction)
    if obj.max_seq_length < 8:
        _fail(src, p + "max_seq_length", "an integer >= 8", obj.max_seq_length)
    if obj.vocab_size < 100:
        _fail(src, p + "vocab_size", "an integer >= 100", obj.vocab_size)
    if not seed_ok(obj.seed):
        _fail(src, p + "seed", "an integer seed in [0, 2^32)", obj.seed)
    if not obj.corpora:
        _fail(src, p + "corpora", "at least one corpus", [])
    for i, c in enumerate(obj.corpora):
        if c.max_documents is not None and c.max_documents < 1:
            _fail(src, f"{p}corpora[{i}].max_documents", "an integer >= 1 or null", c.max_documents)
        if c.rows_per_document is not None and c.rows_per_document < 1:
            _fail(src, f"{p}corpora[{i}].rows_per_document", "an integer >= 1 or null (null: a row is a "
                  "document)", c.rows_per_document)
        if c.mirror and c.id.startswith("sample:"):
            _fail(src, f"{p}corpora[{i}].mirror", "null for a sample: source (the sample is read as is)", c.mirror)


def _model(obj, src: str, p: str) -> None:
    if obj.arch not in ARCHS:
        _fail(src, p + "arch", f"one of {', '.join(ARCHS)}", obj.arch)
    if obj.initializer_range is not None and obj.initializer_range <= 0:
        _fail(src, p + "initializer_range", "a positive number or null (the arch's default)", obj.initializer_range)
    for k in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if not 0 <= getattr(obj, k) < 1:
            _fail(src, p + k, "a probability in [0, 1)", getattr(obj, k))


def _distill(obj, src: str, p: str) -> None:
    if obj.alpha_hard < 0:
        _fail(src, p + "alpha_hard", "a number >= 0", obj.alpha_hard)
    if obj.soft_loss_positions not in ("masked", "all"):
        _fail(src, p + "soft_loss_positions", "one of masked, all", obj.soft_loss_positions)
    check_schedule(obj.alpha_soft, src, p + "alpha_soft", positive=False)
    check_schedule(obj.temperature, src, p + "temperature", positive=True)


def _finetune(obj, src: str, p: str) -> None:
    if obj.lr <= 0:
        _fail(src, p + "lr", "a positive number", obj.lr)
    if obj.epochs <= 0:
        _fail(src, p + "epochs", "a positive number", obj.epochs)
    if obj.batch_size < 1:
        _fail(src, p + "batch_size", "an integer >= 1", obj.batch_size)
    if not obj.seeds:
        _fail(src, p + "seeds", "at least one seed", [])
    for i, seed in enumerate(obj.seeds):
        if not seed_ok(seed):
            _fail(src, f"{p}seeds[{i}]", "an integer seed in [0, 2^32)", seed)
    if any(v <= 0 for v in obj.lr_grid):
        _fail(src, p + "lr_grid", "positive learning rates (or [] for no selection)", list(obj.lr_grid))
    _check_per_task(obj, src, p)


def _studies(obj, src: str, p: str) -> None:
    for name, spec in obj.soft_weight.items():
        check_schedule(spec, src, f"{p}soft_weight.{name}", positive=False)


def _launch(obj, src: str, p: str) -> None:
    if obj.num_threads is not None and obj.num_threads < 1:
        _fail(src, p + "num_threads", "an integer >= 1 or null (torch's default)", obj.num_threads)
    if obj.num_processes < 1:
        _fail(src, p + "num_processes", "an integer >= 1", obj.num_processes)
    if obj.device not in ("auto", "cpu", "cuda"):
        _fail(src, p + "device", "one of auto, cpu, cuda", obj.device)
    if obj.finetune_workers < 1:
        _fail(src, p + "finetune_workers", "an integer >= 1", obj.finetune_workers)
    if obj.peak_tflops <= 0:
        _fail(src, p + "peak_tflops", "a positive number", obj.peak_tflops)
    if not 0 < obj.assumed_mfu <= 1:
        _fail(src, p + "assumed_mfu", "a fraction in (0, 1]", obj.assumed_mfu)
    _check_machines(obj, src, p)


def _profile(obj, src: str, p: str) -> None:
    if not PROFILE_NAME.fullmatch(obj.profile or ""):
        _fail(src, "profile", "a plain name (letters, digits, _ . + - and spaces; the folder "
              "<outputs>/<profile>: no / and no leading dot)", obj.profile)
    _check_models(obj, src)


#: section class name -> its rules (by name: the schema calls :func:`check_values`, so the rules do not import it)
_SECTIONS = {"PretrainConfig": _pretrain, "DataConfig": _data, "ModelConfig": _model, "DistillConfig": _distill,
             "FinetuneConfig": _finetune, "StudiesConfig": _studies, "LaunchConfig": _launch, "Config": _profile}


def _check_machines(la, src: str, p: str) -> None:
    """The several-machines keys: a machine count that divides the processes, a rendezvous "host:port" when there
    is more than one machine, a known backend, a positive timeout."""
    if la.num_machines < 1:
        _fail(src, p + "num_machines", "an integer >= 1", la.num_machines)
    if la.num_processes % la.num_machines:
        _fail(src, p + "num_processes", f"a multiple of launch.num_machines ({la.num_machines}): the processes of "
              f"all machines together", la.num_processes)
    if la.rdzv_backend not in ("static", "c10d"):
        _fail(src, p + "rdzv_backend", "one of static, c10d", la.rdzv_backend)
    if la.rdzv_endpoint is not None:
        host, _, port = la.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            _fail(src, p + "rdzv_endpoint", "host:port, e.g. node001:29500", la.rdzv_endpoint)
    elif la.num_machines > 1:
        _fail(src, p + "rdzv_endpoint", f"host:port of node 0 for launch.num_machines {la.num_machines} "
              f"(e.g. --set launch.rdzv_endpoint=node001:29500)", None)
    if not la.node_rank_env.strip():
        _fail(src, p + "node_rank_env", "the name of an environment variable (e.g. SLURM_NODEID)", la.node_rank_env)
    if la.node_timeout_s <= 0:
        _fail(src, p + "node_timeout_s", "a positive number of seconds", la.node_timeout_s)


def _check_per_task(ft, src: str, p: str) -> None:
    """Per-task settings name known GLUE tasks and hold positive numbers (caps: integers >= 1 or null)."""
    if ft.max_seq_length < 8:
        _fail(src, p + "max_seq_length", "an integer >= 8", ft.max_seq_length)
    for k in ("epochs_per_task", "lr_per_task", "max_train_examples_per_task", "max_seq_length_per_task"):
        for task, v in getattr(ft, k).items():
            if task not in TASKS:
                _fail(src, f"{p}{k}.{task}", f"a GLUE task name ({', '.join(TASKS)})", task)
            if k == "max_seq_length_per_task":
                if isinstance(v, bool) or not isinstance(v, int) or v < 8:
                    _fail(src, f"{p}{k}.{task}", "an integer >= 8 (tokens; bytes with data.tokenizer: bytes)", v)
                continue
            if isinstance(v, str) and k != "max_train_examples_per_task":   # YAML 1.1 reads "5e-5" as a string
                try:
                    v = getattr(ft, k)[task] = float(v)
                except ValueError:
                    pass
            if k == "max_train_examples_per_task":
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                    _fail(src, f"{p}{k}.{task}", "an integer >= 1 or null (the whole training set)", v)
            elif not _finite(v) or v <= 0:
                _fail(src, f"{p}{k}.{task}", "a positive number (finite)", v)
    for k in ("max_train_examples", "max_eval_examples"):
        if getattr(ft, k) is not None and getattr(ft, k) < 1:
            _fail(src, p + k, "an integer >= 1 or null (the whole split)", getattr(ft, k))


def _check_models(cfg, src: str) -> None:
    for name, spec in cfg.model.sizes.items():
        try:
            size_from_spec(spec)
        except SizeError as e:
            key = f"model.sizes.{name}" + (f".{e.key}" if e.key else "")
            raise ConfigError(f"{src}: {key}: {e}") from None
    sizes = [("model.student", cfg.model.student)] + [
        (f"model.teachers.{r}", s) for r, s in cfg.model.teachers.items()]
    for key, name in sizes:
        if name not in cfg.model.sizes and name not in SIZES:
            defined = f"model.sizes: {', '.join(sorted(cfg.model.sizes))}; " if cfg.model.sizes else ""
            raise ConfigError(f"{src}: {key}: unknown model size {name!r}: neither in model.sizes nor a "
                              f"preset ({defined}presets: {', '.join(sorted(SIZES))})")
    for key, name in sizes:
        pinned = resolve_size(name, cfg.model.sizes).get("vocab_size")
        if pinned is not None and pinned != cfg.data.vocab_size:
            raise ConfigError(f"{src}: {key}: size {name!r} has vocab {pinned}, but data.vocab_size is "
                              f"{cfg.data.vocab_size}: teacher and student must share one vocabulary")
    for role in cfg.studies.teacher_quality:
        if role not in cfg.model.teachers:
            raise ConfigError(f"{src}: studies.teacher_quality: teacher {role!r} is not in model.teachers "
                              f"({', '.join(cfg.model.teachers)})")
    _check_pretrain_seeds(cfg, src)
    check_arms(cfg, src)
    for k in ("param_remap_teacher", "soft_weight_teacher"):
        role = getattr(cfg.studies, k)
        if role not in cfg.model.teachers:
            raise ConfigError(f"{src}: studies.{k}: teacher {role!r} is not in model.teachers "
                              f"({', '.join(cfg.model.teachers)})")


def _check_pretrain_seeds(cfg, src: str) -> None:
    known = arm_names(cfg) if cfg.studies.pretrain_seeds else []
    for name, seeds in cfg.studies.pretrain_seeds.items():
        key = f"studies.pretrain_seeds.{name}"
        if name not in known:
            _fail(src, key, f"a run name of this profile ({', '.join(known)})", name)
        if (not isinstance(seeds, list) or not seeds
                or not all(seed_ok(s) for s in seeds)):
            _fail(src, key, "a non-empty list of integer seeds in [0, 2^32)", seeds)
