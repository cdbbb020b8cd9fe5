"""GLUE tasks: metadata, loading (offline mirror or Hub), dynamic-padding batches, metrics.

Sources. ``source`` is a Hub id (``nyu-mll/glue``) or ``sample:nyu-mll/glue`` (the subsets
shipped with the package). Through :func:`dwt_lib.data.sources.resolve` a Hub id becomes
``$DWT_DATA_DIR/nyu-mll/glue`` when that folder exists; from a folder splits are read from
``<folder>/<task>/<split>-*.parquet`` (Hub layout, Hub label ids). Otherwise
``datasets.load_dataset(source, task, split=...)`` fetches them. The offline mirror has no
MNLI, no QQP and no QNLI train: asking for them raises :class:`DataSourceError` naming the
task, the split and the place tried.

Metrics follow the GLUE benchmark and the paper, on a 0-100 scale: CoLA Matthews
correlation; STS-B the mean of Pearson and Spearman correlation; MRPC and QQP the mean of
F1 (positive class = 1, "equivalent"/"duplicate") and accuracy, the usual single-number
convention of the GLUE leaderboard (both parts stay in the dict); MNLI accuracy on
validation_matched; the other tasks accuracy. The GLUE average is the plain mean of one
score per task, as in the paper's tables.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from dwt_lib.config.tasks import TASKS, GlueTask, get_task, split_name
from dwt_lib.core import readonly
from dwt_lib.core.errors import DataSourceError
from dwt_lib.data.sources import require_source, resolve, SAMPLE_PREFIX


# ----------------------------------------------------------------------------- reading

def _resolve(source: str) -> str:
    return resolve(source)


def _error(msg: str) -> Exception:
    return DataSourceError(msg)


def _local_files(folder: Path, task: str, split: str) -> list[Path]:
    return sorted((folder / task).glob(f"{split}-*.parquet"))


def _unavailable(task: str, split: str, source: str, tried: str) -> Exception:
    if source.startswith(SAMPLE_PREFIX):
        return _error(
            f"GLUE {task} split {split!r} is not in the sample {source!r} (tried {tried}): the sample "
            f"holds subsets of SST-2, MRPC, CoLA, STS-B and RTE only; drop {task!r} from finetune.tasks, "
            f"or set finetune.source: nyu-mll/glue (read from DWT_DATA_DIR or the Hub).")
    return _error(
        f"GLUE {task} split {split!r} is not available from source {source!r} (tried {tried}). "
        f"An offline mirror may lack tasks (MNLI, QQP and QNLI train, for instance): drop {task!r} "
        f"from finetune.tasks, or read {source!r} from the Hub (unset DWT_DATA_DIR or point it at a "
        f"mirror without that folder, and unset HF_HUB_OFFLINE).")


def read_split(task: str, split: str = "train", source: str = "nyu-mll/glue"):
    """The raw rows of one GLUE split as a ``pandas.DataFrame`` (text columns, ``label``, ``idx``)."""
    t = get_task(task)
    split = split_name(t.name, split)
    where = _resolve(source)
    folder = Path(where)
    if folder.is_dir():
        files = _local_files(folder, t.name, split)
        if not files:
            raise _unavailable(t.name, split, source, f"{folder}/{t.name}/{split}-*.parquet")
        import pyarrow.parquet as pq
        import pyarrow as pa
        return pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    import datasets
    try:
        ds = datasets.load_dataset(where, t.name, split=split)
    except Exception as e:  # network, unknown config or split: one message that says what to do
        raise _unavailable(t.name, split, source, f"datasets.load_dataset({where!r}, {t.name!r}, "
                           f"split={split!r}): {type(e).__name__}: {e}") from e
    return ds.to_pandas()


def check_split(task: str, split: str = "train", source: str = "nyu-mll/glue") -> None:
    """Raise :class:`DataSourceError` now if :func:`read_split` could not read this split (reads no rows).

    A local mirror is checked file by file; a Hub id is checked to exist and be reachable
    (its splits are only known by downloading them)."""
    t = get_task(task)
    split = split_name(t.name, split)
    folder = Path(require_source(source, "GLUE source"))
    if folder.is_dir() and not _local_files(folder, t.name, split):
        raise _unavailable(t.name, split, source, f"{folder}/{t.name}/{split}-*.parquet")


def split_size(task: str, split: str = "train", source: str = "nyu-mll/glue") -> Optional[int]:
    """Number of rows of a split, or ``None`` when the source does not have it.

    Local mirror: read from Parquet metadata (no data read). Hub: loads the split."""
    t = get_task(task)
    folder = Path(_resolve(source))
    if folder.is_dir():
        import pyarrow.parquet as pq
        files = _local_files(folder, t.name, split_name(t.name, split))
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files) if files else None
    try:
        return len(read_split(t.name, split, source))
    except Exception:
        return None


def available_tasks(source: str = "nyu-mll/glue") -> list[str]:
    """Tasks (in :data:`TASKS` order) whose train and validation splits the source has.

    For a local mirror this checks the files; for a Hub id (no local folder) every task is
    assumed available, since checking would download them."""
    folder = Path(_resolve(source))
    if not folder.is_dir():
        return list(TASKS)
    return [n for n, t in TASKS.items()
            if _local_files(folder, n, "train") and _local_files(folder, n, t.validation_split)]


GLUE_TABLE_COLUMNS = ["task", "train", "validation", "validation_split", "metric", "in_profile", "available"]


def glue_table(cfg) -> "Any":
    """One row per GLUE task: train and validation sizes (or ``"unavailable"``), the metric,
    whether the profile fine-tunes on it (``in_profile``) and whether it can (``available``).

    ``cfg`` is a :class:`~dwt_lib.config.Config` or its ``finetune`` section. In read-only mode (a Config): the
    table recorded when the profile's registry was exported (the sizes come from the data, absent now)."""
    import pandas as pd
    if readonly.enabled() and hasattr(cfg, "profile"):
        recorded = readonly.manifest(cfg.profile).get("glue")
        if recorded:
            return pd.DataFrame(recorded, columns=GLUE_TABLE_COLUMNS)   # the export's JSON sorts the keys
    ft = getattr(cfg, "finetune", cfg)
    rows = []
    for name, t in TASKS.items():
        n_train = split_size(name, "train", ft.source)
        n_val = split_size(name, "validation", ft.source)
        rows.append(dict(task=name, train=n_train if n_train is not None else "unavailable",
                         validation=n_val if n_val is not None else "unavailable",
                         validation_split=t.validation_split, metric=t.metric,
                         in_profile=name in ft.tasks,
                         available=n_train is not None and n_val is not None))
    return pd.DataFrame(rows, columns=GLUE_TABLE_COLUMNS)


# ----------------------------------------------------------------------------- tokenized data

class GlueDataset(torch.utils.data.Dataset):
    """Tokenized GLUE examples, unpadded: item ``i`` is a dict of ``input_ids``,
    ``token_type_ids``, ``attention_mask`` (lists) and ``labels`` (int, or float for STS-B)."""

    def __init__(self, task: str, split: str, encodings: dict, labels: Sequence):
        self.task, self.split = task, split
        self.encodings = encodings
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = self.labels[i]
        return item


def load_glue(task: str, tokenizer, max_seq_length: int = 128, split: str = "train",
              source: str = "nyu-mll/glue", max_examples: Optional[int] = None) -> GlueDataset:
    """Tokenize one GLUE split into a :class:`GlueDataset` (first ``max_examples`` rows when set).

    Single sentences or sentence pairs, truncated to ``max_seq_length`` tokens (pairs with the
    longest-first strategy), not padded: :func:`collate` pads each batch to its longest row.
    Labels are the Hub's ids (floats 0-5 for STS-B). Test splits carry label -1."""
    t = get_task(task)
    df = read_split(t.name, split, source)
    if max_examples is not None:
        df = df.iloc[:max_examples]
    texts = [df[k].astype(str).tolist() for k in t.text_keys]
    enc = tokenizer(*texts, truncation=True, max_length=max_seq_length, padding=False,
                    return_token_type_ids=True, return_attention_mask=True)
    enc = {k: list(enc[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    labels = df["label"].astype(float if t.is_regression else int).tolist()
    return GlueDataset(t.name, split_name(t.name, split), enc, labels)


def collate(batch: list[dict], pad_token_id: int = 0) -> dict:
    """Stack a list of :class:`GlueDataset` items into tensors, padding to the longest row
    of this batch (``pad_token_id`` for ids, 0 for segment ids and the attention mask)."""
    n = max(len(b["input_ids"]) for b in batch)
    out = {}
    for key, pad in (("input_ids", pad_token_id), ("token_type_ids", 0), ("attention_mask", 0)):
        out[key] = torch.tensor([b[key] + [pad] * (n - len(b[key])) for b in batch], dtype=torch.long)
    labels = [b["labels"] for b in batch]
    out["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    return out


# ----------------------------------------------------------------------------- metrics

def _as_predictions(task: GlueTask, predictions) -> np.ndarray:
    p = np.asarray(predictions)
    if task.is_regression:
        return p.reshape(-1).astype(float)
    if p.ndim == 2:                         # logits -> class ids
        p = p.argmax(-1)
    return p.astype(int)


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    # Correlation with a constant vector is undefined (SciPy returns NaN and warns): report 0,
    # which is what such a predictor earns on the leaderboard's correlation metrics.
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return 0.0
    r = float(fn(a, b)[0])
    return 0.0 if math.isnan(r) else r


def compute_metrics(task: str, predictions, labels) -> dict:
    """The task's GLUE metrics on a 0-100 scale, plus ``score`` (the one number per task).

    ``predictions`` are class ids or logits (argmax is taken) for classification, real
    values for STS-B. Keys: ``accuracy`` (classification), ``f1`` (MRPC, QQP),
    ``matthews_correlation`` (CoLA), ``pearson``/``spearmanr`` (STS-B), ``score``."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    t = get_task(task)
    p = _as_predictions(t, predictions)
    y = np.asarray(labels).reshape(-1)
    if len(p) != len(y):
        raise ValueError(f"{t.name}: {len(p)} predictions for {len(y)} labels")
    if t.is_regression:
        y = y.astype(float)
        m = {"pearson": 100 * _corr(pearsonr, p, y), "spearmanr": 100 * _corr(spearmanr, p, y)}
        m["score"] = (m["pearson"] + m["spearmanr"]) / 2
        return m
    y = y.astype(int)
    m = {"accuracy": 100 * float(accuracy_score(y, p))}
    if t.name == "cola":
        m["matthews_correlation"] = 100 * float(matthews_corrcoef(y, p))
        m["score"] = m["matthews_correlation"]
    elif t.name in ("mrpc", "qqp"):
        m["f1"] = 100 * float(f1_score(y, p, zero_division=0))
        m["score"] = (m["f1"] + m["accuracy"]) / 2
    else:
        m["score"] = m["accuracy"]
    return m


def glue_average(scores: dict) -> float:
    """The GLUE average: the plain mean of one score per task (``{task: score}``), as in the
    paper's tables. A value may also be a metrics dict; its ``score`` is used."""
    if not scores:
        raise ValueError("glue_average: no task scores given")
    vals = [float(v["score"] if isinstance(v, dict) else v) for v in scores.values()]
    return float(np.mean(vals))
