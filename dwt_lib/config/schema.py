"""The schema of a profile: typed, frozen dataclasses, and the builder that makes them from plain data (types
checked here, values by :mod:`dwt_lib.config.rules`); loading a file is :mod:`dwt_lib.config.load`.

A profile is a YAML file. It may say ``extends: <other profile>`` and then list only its
differences; mappings merge key by key (except those in ``_REPLACE_WHOLE``: schedules, per-task maps,
``studies.beyond``, which a child replaces whole), everything else (lists, scalars) replaces.
``load_params`` validates every key against the dataclasses below and raises one
:class:`ConfigError` naming the file and the key path, e.g.
``params/smoke.yaml: pretrain.lr: expected a positive number, got -1`` (value rules:
:mod:`dwt_lib.config.rules`).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from dwt_lib.config.rules import check_values
from dwt_lib.core.hashing import jsonable, stable_hash
from dwt_lib.core.errors import ConfigError

MAX_INT = 2**63 - 1             # what torch and NumPy hold; a larger integer overflows inside them


#: ``data.tokenizer`` values that name no Hub id: WordPiece trained on the corpus, or raw UTF-8 bytes.
TRAINED_TOKENIZER, BYTE_TOKENIZER = "train", "bytes"


# ----------------------------------------------------------------------------- schema

@dataclass(frozen=True)
class CorpusSource:
    id: str                                 # Hub id (read from $DWT_DATA_DIR/<id> first), or sample:<path>
    config: Optional[str] = None            # Hub dataset config (e.g. "20231101.en")
    split: str = "train"
    text_column: str = "text"
    max_documents: Optional[int] = None     # first N rows of this corpus; None: data.max_documents
    mirror: Optional[str] = None            # a folder under $DWT_DATA_DIR standing in offline (another dataset)
    # Consecutive rows joined into one document (each row a paragraph), for a corpus stored one sentence
    # per row (BookCorpus on the Hub). None: a row is a document. Grouped by global row index (row r goes to
    # document r // N), so num_proc never changes it; a stand-in (``mirror``) is read ungrouped; keys stay
    # ``<id>#<first row>`` and max_documents counts grouped documents.
    rows_per_document: Optional[int] = None


@dataclass(frozen=True)
class DataConfig:
    corpora: tuple[CorpusSource, ...] = ()
    sample_every: int = 4                   # keep 1 sentence in every N (paper: 4)
    max_documents: Optional[int] = None     # per corpus, first N documents (small profiles)
    max_sentences: Optional[int] = None     # after sampling, whole corpus
    validation_fraction: float = 0.01       # of documents, split by document
    tokenizer: str = "google-bert/bert-base-uncased"   # a Hub id, "train" (WordPiece) or "bytes" (UTF-8 bytes)
    vocab_size: int = 30522                 # used when tokenizer == "train"
    max_seq_length: int = 128
    mlm_probability: float = 0.15
    num_proc: Optional[int] = None          # None = all cores
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    student: str = "paper-student"
    teachers: dict = field(default_factory=dict)        # role -> size name
    sizes: dict = field(default_factory=dict)           # name -> {layers, hidden, heads[, intermediate]}
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    arch: str = "bert"                      # one of ARCHS: "bert" (the paper's) or "modernbert" (RoPE, pre-LN, GeGLU)
    initializer_range: Optional[float] = None   # std of the initial weights; None: the arch's default (0.02)


@dataclass(frozen=True)
class PretrainConfig:
    lr: float = 5e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    warmup_fraction: float = 0.05
    epochs: float = 20.0
    max_steps: Optional[int] = None         # overrides epochs when set
    batch_size_per_device: int = 16
    grad_accum_steps: int = 1
    max_grad_norm: float = 1.0
    precision: str = "bf16"                 # "fp32" | "bf16"
    seed: int = 42
    log_every: int = 50
    eval_every: int = 1000
    eval_batches: int = 50
    checkpoint_every: int = 1000
    snapshot_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    num_workers: int = 0


@dataclass(frozen=True)
class DistillConfig:
    alpha_hard: float = 1.0
    alpha_soft: dict = field(default_factory=lambda: {"kind": "constant", "value": 1.0})
    temperature: dict = field(default_factory=lambda: {"kind": "constant", "value": 1.0})
    soft_loss_positions: str = "masked"     # "masked" | "all"
    scale_by_t2: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    tasks: tuple[str, ...] = ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc")
    lr: float = 2e-5
    epochs: float = 3.0
    epochs_per_task: dict = field(default_factory=lambda: {"mrpc": 5.0})
    lr_per_task: dict = field(default_factory=dict)                 # task -> lr (else ``lr``)
    lr_grid: tuple[float, ...] = ()     # if set: a task not in lr_per_task gets the grid's lr that fine-tunes the
                                        # standalone student best (studies.selected_lrs), the same for every model
    max_train_examples_per_task: dict = field(default_factory=dict)  # task -> cap or null = all (else the cap below)
    batch_size: int = 32
    group_by_length: bool = False       # batches of similar length (less padding), as HF Trainer's option
    max_seq_length: int = 128           # tokens (bytes with data.tokenizer: bytes) per example, pairs included
    max_seq_length_per_task: dict = field(default_factory=dict)     # task -> max_seq_length (else the one above)
    weight_decay: float = 0.0
    warmup_fraction: float = 0.0
    seeds: tuple[int, ...] = (1,)
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    precision: str = "bf16"
    source: str = "nyu-mll/glue"


@dataclass(frozen=True)
class StudiesConfig:
    teacher_quality: tuple[str, ...] = ("weak", "very_weak", "extremely_weak")
    soft_weight: dict = field(default_factory=dict)     # variant name -> schedule spec
    soft_weight_tasks: tuple[str, ...] = ("mnli", "cola", "qqp", "sst2")
    soft_weight_teacher: str = "weak"
    param_remap_teacher: str = "weak"
    pretrain_seeds: dict = field(default_factory=dict)  # run name -> pre-training seeds (pretrain.seed always one)
    beyond: dict = field(default_factory=dict)          # notebook 06: arm name -> settings (dwt_lib/beyond.py)


@dataclass(frozen=True)
class LaunchConfig:
    num_processes: int = 1                   # processes (devices) in all, over every machine: the run's world size
    accelerate_config: Optional[str] = None  # path under params/accelerate/
    device: str = "auto"                     # "auto" | "cpu" | "cuda"
    num_threads: Optional[int] = None        # torch intra-op threads (None = default)
    tensorboard: bool = False                # also log to TensorBoard (runs/<id>/tensorboard), needs [tensorboard]
    finetune_workers: int = 1                # fine-tuning runs at once (processes sharing the device)
    peak_tflops: float = 312.0               # `dwt plan`: one device's dense bf16 peak (A100 312, H100/H200 989)
    assumed_mfu: float = 0.40                # `dwt plan`: model-FLOP utilisation assumed for pre-training
    # Several machines (dwt_lib/nodes.py): the same command on every node, node 0 drives. How the processes are
    # spread over machines is not part of a run's identity (its world size, num_processes, is).
    num_machines: int = 1                    # nodes; each runs num_processes / num_machines processes
    rdzv_endpoint: Optional[str] = None      # "host:port" where the nodes meet (node 0's address), for num_machines > 1
    rdzv_backend: str = "static"             # "static": node k is machine rank k | "c10d": torchrun assigns ranks
    node_rank_env: str = "SLURM_NODEID"      # environment variable holding this node's rank when --node-rank is not given
    node_timeout_s: float = 300.0            # how long a node waits for another (start, shared folder, heartbeat)


@dataclass(frozen=True)
class Config:
    profile: str = "paper"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    studies: StudiesConfig = field(default_factory=StudiesConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the whole config (tuples become lists)."""
        return jsonable(dataclasses.asdict(self))

    def short_hash(self, n: int = 10) -> str:
        """Stable hash of the config: sha256 of its canonical JSON (sorted keys).

        Independent of key order in YAML, of the process (no ``hash()``), and of the
        profile name, so two profiles that resolve to the same values share runs.
        """
        d = self.to_dict()
        d.pop("profile", None)
        d.pop("description", None)
        for (section, k), default in _UNHASHED_DEFAULTS.items():
            if d[section].get(k) == default:
                del d[section][k]
        return stable_hash(d, n)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with dotted-key overrides applied and validated, e.g. ``{"pretrain.lr": 1e-3}``."""
        raw = self.to_dict()
        for k, v in overrides.items():
            _set_dotted(raw, k, v, "<override>")
        return _build(Config, raw, "<override>", "")


#: Keys added after results were published: left out of :meth:`Config.short_hash` at their default, so the
#: config hash of every existing profile stays what it was (tests/test_golden_ids.py pins it).
_UNHASHED_DEFAULTS = {("model", "arch"): "bert", ("model", "initializer_range"): None,
                      ("finetune", "max_seq_length_per_task"): {},
                      ("launch", "num_machines"): 1, ("launch", "rdzv_endpoint"): None,
                      ("launch", "rdzv_backend"): "static", ("launch", "node_rank_env"): "SLURM_NODEID",
                      ("launch", "node_timeout_s"): 300.0}


# ----------------------------------------------------------------------------- building (and checking)

def _set_dotted(raw: dict, key: str, value: Any, src: str) -> None:
    parts = key.split(".")
    d = raw
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            raise ConfigError(f"{src}: {key}: unknown key path")
        d = d[p]
    d[parts[-1]] = value


def _build(cls: type, raw: Any, src: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: {prefix or '<top>'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        k = unknown[0]
        raise ConfigError(f"{src}: {prefix}{k}: unknown key (allowed: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, src, f"{prefix}{k}") for k, v in raw.items()}
    obj = cls(**kwargs)
    check_values(obj, src, prefix)      # impossible values, per section (config/rules.py)
    return obj


def _coerce(tp: Any, v: Any, src: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], v, src, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, src, key + ".")
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{src}: {key}: expected a list, got {v!r}")
        return tuple(_coerce(args[0], x, src, f"{key}[{i}]") for i, x in enumerate(v))
    if tp is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{src}: {key}: expected a mapping, got {v!r}")
        return dict(v)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{src}: {key}: expected true or false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{src}: {key}: expected an integer, got {v!r}")
        if abs(v) > MAX_INT:
            raise ConfigError(f"{src}: {key}: expected an integer below 2^63, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{src}: {key}: expected a number, got {v!r}")
        try:
            f = float(v)
        except OverflowError:                   # an integer beyond a float's range
            f = math.inf
        if not math.isfinite(f):                # .nan, .inf: no setting means "not a number" or "forever"
            raise ConfigError(f"{src}: {key}: expected a finite number, got {v!r}")
        return f
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{src}: {key}: expected a string, got {v!r}")
        return v
    return v


