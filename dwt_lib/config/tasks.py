"""The GLUE tasks a profile fine-tunes on, as plain data (columns, labels, metric, validation split, the Hub's
train size), and the settings one task is fine-tuned with (what a fine-tuning run's identity hashes).
Loading and metrics are :mod:`dwt_lib.data.glue`."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from dwt_lib.core.errors import UnknownTaskError


@dataclass(frozen=True)
class GlueTask:
    """What a GLUE task looks like in ``nyu-mll/glue``."""
    name: str
    text_keys: tuple[str, ...]          # one column (single sentence) or two (sentence pair)
    num_labels: int                     # 1 for regression (STS-B)
    metric: str                         # what ``score`` is, in words
    validation_split: str = "validation"
    is_regression: bool = False
    train_size: int = 0                 # rows of the Hub's train split: for a plan made without the data at hand
    in_paper_average: bool = True       # the paper's GLUE average leaves out its two smallest tasks, RTE and WNLI


TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("mnli", ("premise", "hypothesis"), 3, "accuracy (matched)", "validation_matched", train_size=392702),
    GlueTask("qqp", ("question1", "question2"), 2, "mean of F1 and accuracy", train_size=363846),
    GlueTask("qnli", ("question", "sentence"), 2, "accuracy", train_size=104743),
    GlueTask("sst2", ("sentence",), 2, "accuracy", train_size=67349),
    GlueTask("cola", ("sentence",), 2, "Matthews correlation", train_size=8551),
    GlueTask("stsb", ("sentence1", "sentence2"), 1, "mean of Pearson and Spearman", is_regression=True, train_size=5749),
    GlueTask("mrpc", ("sentence1", "sentence2"), 2, "mean of F1 and accuracy", train_size=3668),
    GlueTask("rte", ("sentence1", "sentence2"), 2, "accuracy", train_size=2490, in_paper_average=False),
    GlueTask("wnli", ("sentence1", "sentence2"), 2, "accuracy", train_size=635, in_paper_average=False),
)}


def get_task(task: str) -> GlueTask:
    """The :class:`GlueTask` of a name (case-insensitive); unknown names list the known ones."""
    t = TASKS.get(task.lower())
    if t is None:
        raise UnknownTaskError(f"unknown GLUE task {task!r}", "finetune.tasks or --task",
                               f"known tasks: {', '.join(TASKS)}")
    return t


def average_tasks(tasks) -> tuple[list[str], list[str]]:
    """(the tasks a GLUE average takes, the rest): the paper's set (appendix: "We exclude the smallest datasets,
    RTE and WNLI, due to their unstable training trends") where the profile has any of it, else every task."""
    avg = [t for t in tasks if get_task(t).in_paper_average]
    return (avg, [t for t in tasks if t not in avg]) if avg else (list(tasks), [])


def split_name(task: str, split: str) -> str:
    """The dataset split to read: ``validation`` means the task's validation split
    (``validation_matched`` for MNLI); any other name is taken as is."""
    t = get_task(task)
    return t.validation_split if split == "validation" else split


def finetune_section(cfg):
    """A whole :class:`~dwt_lib.config.Config` or its ``finetune`` section -> the section."""
    return getattr(cfg, "finetune", cfg)   # accept a whole Config or its finetune section


def task_settings(cfg_finetune, task: str) -> dict:
    """The settings one task is fine-tuned with: the profile's ``finetune`` section with the per-task
    keys (``lr_per_task``, ``epochs_per_task``, ``max_train_examples_per_task``, ``max_seq_length_per_task``)
    resolved for ``task`` and dropped. This dict is what a fine-tuning run's identity hashes, so changing CoLA's learning
    rate leaves the SST-2 runs as they are."""
    ft = finetune_section(cfg_finetune)
    name = get_task(task).name
    out = {k: v for k, v in asdict(ft).items()
           if k not in ("tasks", "seeds", "lr_per_task", "epochs_per_task", "max_train_examples_per_task",
                        "lr_grid", "max_seq_length_per_task")}
    out["lr"] = float(ft.lr_per_task.get(name, ft.lr))
    out["epochs"] = float(ft.epochs_per_task.get(name, ft.epochs))
    out["max_train_examples"] = ft.max_train_examples_per_task.get(name, ft.max_train_examples)
    out["max_seq_length"] = ft.max_seq_length_per_task.get(name, ft.max_seq_length)
    return out
