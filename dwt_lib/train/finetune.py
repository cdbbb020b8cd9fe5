"""GLUE fine-tuning of a pre-trained (MLM) checkpoint, and the per-task / GLUE-average table.

The recipe is Hugging Face ``run_glue``'s, which the paper followed: ``BertForSequenceClassification``
on top of the pre-trained encoder (pooler and classifier freshly initialised: our MLM
checkpoints have no pooler), AdamW, linear decay with optional linear warm-up, gradient
clipping at 1.0 (the HF Trainer default), cross-entropy (MSE for STS-B). The loop is a plain
torch loop, readable top to bottom. Batches are padded to their own longest row, not to
``max_seq_length``: GLUE sentences are short, so this is several times faster on CPU.

Nothing is written to disk here: the run registry caches the returned dict.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dwt_lib.core.errors import NonFiniteLossError, diverged_fix
from dwt_lib.config.tasks import TASKS, finetune_section, get_task, task_settings
from dwt_lib.data.glue import collate, compute_metrics, glue_average, load_glue
from dwt_lib.models.encoder import arch_of, classifier_logits, use_device_attention
from dwt_lib.train.steps import decay_groups, device_of

MAX_GRAD_NORM = 1.0   # HF Trainer default (run_glue); the paper is silent


class LengthGroupedBatches:
    """Batches of examples of similar length, in random order (``finetune.group_by_length``).

    Each epoch: a random permutation (from ``generator``) cut into windows of ``window`` batches; each
    window sorted by length and cut into batches; then the batches shuffled. Every example is used once an
    epoch, as with ``shuffle=True``, but a batch pads to a length close to its rows' own, so short-sentence
    tasks (SST-2, CoLA) compute on far fewer padding tokens. HF Trainer's ``group_by_length`` (its
    ``LengthGroupedSampler``) does the same with windows of 50 batches."""

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, window: int = 50):
        self.lengths, self.batch_size, self.generator, self.window = list(lengths), batch_size, generator, window

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = self.window * self.batch_size
        batches = []
        for i in range(0, len(perm), size):
            chunk = sorted(perm[i:i + size], key=lambda j: self.lengths[j])
            batches += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


def build_classifier(model_path_or_model, task: str, seed: int):
    """A sequence classifier for ``task`` whose encoder holds the pre-trained weights, of the checkpoint's
    architecture (``BertForSequenceClassification`` or ``ModernBertForSequenceClassification``, through
    ``AutoModelForSequenceClassification``).

    ``model_path_or_model`` is a directory written by ``save_pretrained`` (of a masked LM) or a masked-LM
    object (left untouched: its weights are copied). The new head (BERT: pooler and classifier, absent from MLM
    checkpoints; ModernBERT: the classifier, its prediction-head transform comes from the checkpoint) is
    initialised from ``seed``."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging
    t = get_task(task)
    kw = dict(num_labels=t.num_labels,
              problem_type="regression" if t.is_regression else "single_label_classification")
    if isinstance(model_path_or_model, (str, bytes)) or hasattr(model_path_or_model, "__fspath__"):
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()    # "some weights newly initialised" is expected here
        hf_logging.disable_progress_bar()
        try:
            clf = AutoModelForSequenceClassification.from_pretrained(str(model_path_or_model), **kw)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    else:
        src = model_path_or_model
        if not hasattr(src, "base_model") or src.base_model is src:
            raise TypeError(f"expected a checkpoint directory or a masked-LM model (BERT or ModernBERT), "
                            f"got {type(src).__name__}")
        config = src.config.__class__.from_dict(src.config.to_dict())
        for k, v in kw.items():
            setattr(config, k, v)
        clf = AutoModelForSequenceClassification.from_config(config)
        # what from_pretrained would load: every tensor whose name the classifier shares with the MLM
        mine = clf.state_dict()
        shared = {k: v for k, v in src.state_dict().items() if k in mine and mine[k].shape == v.shape}
        clf.load_state_dict(shared, strict=False)
        base = clf.base_model_prefix + "."
        bad = [k for k in src.state_dict() if k.startswith(base) and k not in shared]
        if bad:
            raise ValueError(f"encoder weights do not fit the classifier: {bad[:5]}")
    # The new head gets BERT's init from ``seed`` alone, the same whichever way the encoder arrived
    # (from_pretrained and the constructor consume the RNG differently).
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in arch_of(clf).new_head(clf):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * clf.config.initializer_range)
            lin.bias.zero_()
    return clf


def finetune(model_path_or_model, task: str, cfg_finetune, tokenizer, seed: int,
             device: str = "cpu", progress: bool = True) -> dict:
    """Fine-tune a pre-trained checkpoint on one GLUE task and score it on the validation split.

    Settings come from ``cfg_finetune`` (a ``FinetuneConfig`` or a whole ``Config``) through
    :func:`task_settings`: lr (``lr_per_task`` overrides), epochs (``epochs_per_task`` overrides;
    fractional epochs stop mid-epoch), the training cap (``max_train_examples_per_task`` overrides
    ``max_train_examples``; null = the whole training set), batch size,
    max_seq_length, weight decay (not on biases and LayerNorm, as HF), warm-up fraction,
    precision (bf16 autocast for the forward pass, loss in float32), max train/eval examples,
    source. ``seed`` fixes the head initialisation, dropout and the shuffling.

    Returns ``{task, seed, metrics, score, majority_baseline, n_train, n_eval, wall_time_s,
    examples_per_s}``: ``metrics`` from :func:`~dwt_lib.data.glue.compute_metrics` (0-100),
    ``majority_baseline`` the score of always predicting the most frequent training label
    (the training mean for STS-B, whose correlations are then undefined and reported as 0),
    ``examples_per_s`` training examples processed per second of training.
    """
    from transformers import get_linear_schedule_with_warmup, set_seed
    t0 = time.perf_counter()
    ft = finetune_section(cfg_finetune)
    t = get_task(task)
    ts = task_settings(ft, t.name)
    dev = device_of(device)
    set_seed(seed)

    # ---- model (first: a vocabulary mismatch should fail before any data is read)
    model = build_classifier(model_path_or_model, t.name, seed)
    if model.config.vocab_size != len(tokenizer):
        raise ValueError(f"model vocab_size {model.config.vocab_size} differs from the tokenizer's "
                         f"{len(tokenizer)} tokens: fine-tune with the tokenizer the model was "
                         f"pre-trained with")
    model.to(dev)
    use_device_attention(model, dev)       # CPU: bf16 matmuls + fp32 softmax (faster than SDPA there)

    # ---- data
    train, val, train_loader, val_loader = _loaders(t.name, tokenizer, ft, ts, seed)

    # ---- optimiser and schedule
    opt = torch.optim.AdamW(decay_groups(model, ft.weight_decay), lr=ts["lr"])   # no decay on 1-d tensors
    epochs = ts["epochs"]
    total_steps = max(1, math.ceil(epochs * len(train_loader)))
    sched = get_linear_schedule_with_warmup(opt, int(ft.warmup_fraction * total_steps), total_steps)
    use_bf16 = ft.precision == "bf16"

    def forward(batch):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            # the model's logits, with its last encoder layer on the [CLS] row only (all the pooler reads)
            logits = classifier_logits(model, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        return logits.float()               # loss and metrics in float32

    # ---- train
    seen, train_time = _train(model, train_loader, forward, opt, sched, total_steps, t, seed, dev, progress,
                              lambda bad: NonFiniteLossError(
                                  f"fine-tuning {t.name} seed {seed}: the loss is not finite (NaN or inf) at step "
                                  f"{bad} of {total_steps}; nothing was recorded",
                                  str(model_path_or_model) if isinstance(model_path_or_model, (str, os.PathLike))
                                  else t.name,
                                  diverged_fix("finetune", ts["lr"], ft.precision,
                                               t.name if t.name in ft.lr_per_task else "")))

    # ---- evaluate
    preds = evaluate(model, val_loader, forward, t.is_regression)
    metrics = compute_metrics(t.name, preds, val.labels)
    result = dict(task=t.name, seed=seed, metrics=metrics, score=metrics["score"],
                  majority_baseline=majority_baseline(t.name, train.labels, val.labels),
                  n_train=len(train), n_eval=len(val), steps=total_steps, epochs=epochs, lr=ts["lr"],
                  wall_time_s=time.perf_counter() - t0,
                  examples_per_s=seen / train_time if train_time > 0 else float("nan"))
    if progress:
        print(f"[finetune {t.name} seed {seed}] {t.metric}: {result['score']:.2f} "
              f"(majority baseline {result['majority_baseline']:.2f}, n_eval {len(val)})", flush=True)
    return result


def _loaders(task: str, tokenizer, ft, ts: dict, seed: int):
    """The task's training and validation sets and their loaders (training shuffled by a generator seeded with
    ``seed``; grouped by length with ``finetune.group_by_length``)."""
    train = load_glue(task, tokenizer, ts["max_seq_length"], "train", ft.source, ts["max_train_examples"])
    val = load_glue(task, tokenizer, ts["max_seq_length"], "validation", ft.source, ft.max_eval_examples)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    collate_fn = lambda b: collate(b, pad_id)  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    if ft.group_by_length:
        sampler = LengthGroupedBatches([len(x) for x in train.encodings["input_ids"]], ft.batch_size, gen)
        train_loader = torch.utils.data.DataLoader(train, batch_sampler=sampler, collate_fn=collate_fn)
    else:
        train_loader = torch.utils.data.DataLoader(train, batch_size=ft.batch_size, shuffle=True,
                                                   generator=gen, collate_fn=collate_fn)
    val_loader = torch.utils.data.DataLoader(val, batch_size=max(ft.batch_size, 64), shuffle=False,
                                             collate_fn=collate_fn)
    return train, val, train_loader, val_loader


def _train(model, train_loader, forward, opt, sched, total_steps: int, t, seed: int, dev, progress: bool,
           diverged) -> tuple[int, float]:
    """``total_steps`` optimizer steps over ``train_loader`` (epochs repeat it; a fractional last epoch stops
    mid-way); ``diverged(step)`` is the error raised when a loss was not finite. Returns the training examples
    seen and the training wall time."""
    model.train()
    step, seen, t_train = 0, 0, time.perf_counter()
    report_every = max(1, total_steps // 10)
    # The first step whose loss was NaN or inf, kept on the device (no host sync per step on a GPU) and read at
    # every report step and the last: a diverged fine-tuning stops there, and nothing of it is recorded.
    first_bad = torch.full((), -1, dtype=torch.long, device=dev)
    while step < total_steps:
        for batch in train_loader:
            batch = {k: v.to(dev) for k, v in batch.items()}
            logits = forward(batch)
            if t.is_regression:
                loss = F.mse_loss(logits.squeeze(-1), batch["labels"])
            else:
                loss = F.cross_entropy(logits, batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step + 1, first_bad)
            step += 1
            seen += len(batch["labels"])
            if (step % report_every == 0 or step == total_steps) and (bad := int(first_bad)) >= 0:
                raise diverged(bad)
            if progress and (step % report_every == 0 or step == total_steps):
                # .item() is a device sync point: only on report steps
                print(f"[finetune {t.name} seed {seed}] step {step}/{total_steps} "
                      f"epoch {step / len(train_loader):.2f} loss {loss.item():.4f}", flush=True)
            if step >= total_steps:
                break
    train_time = time.perf_counter() - t_train
    return seen, train_time


@torch.no_grad()
def evaluate(model, loader, forward, is_regression: bool) -> np.ndarray:
    """Predictions of ``model`` over ``loader`` (class ids, or real values for regression)."""
    model.eval()
    out = []
    for batch in loader:
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        logits = forward(batch)
        out.append(logits.squeeze(-1) if is_regression else logits.argmax(-1))
    model.train()
    return torch.cat(out).cpu().numpy()


def majority_baseline(task: str, train_labels, eval_labels) -> float:
    """Score of a constant predictor: the most frequent training label (ties: the smallest id),
    or the training mean for regression (correlations undefined, reported as 0)."""
    t = get_task(task)
    y = np.asarray(train_labels)
    if t.is_regression:
        const = float(y.mean())
    else:
        vals, counts = np.unique(y.astype(int), return_counts=True)
        const = int(vals[counts.argmax()])
    return compute_metrics(t.name, np.full(len(eval_labels), const), eval_labels)["score"]


def glue_scores(results: list[dict]) -> Any:
    """Per-task table over fine-tuning results (the dicts :func:`finetune` returns).

    A ``pandas.DataFrame`` indexed by task (in :data:`~dwt_lib.data.glue.TASKS` order) with columns
    ``mean``, ``std`` (sample std over seeds; 0 with one seed), ``n_seeds``,
    ``majority_baseline`` (mean over seeds), plus a last row ``glue_avg`` whose ``mean`` is the
    GLUE average of the per-task means (:func:`~dwt_lib.data.glue.glue_average`)."""
    import pandas as pd
    if not results:
        raise ValueError("glue_scores: no results")
    df = pd.DataFrame([dict(task=r["task"], seed=r["seed"], score=r["score"],
                            majority_baseline=r.get("majority_baseline", float("nan")))
                       for r in results])
    g = df.groupby("task")
    table = pd.DataFrame({"mean": g["score"].mean(),
                          "std": g["score"].std(ddof=1).fillna(0.0),
                          "n_seeds": g["score"].count(),
                          "majority_baseline": g["majority_baseline"].mean()})
    order = [n for n in TASKS if n in table.index] + [n for n in table.index if n not in TASKS]
    table = table.loc[order]
    avg = pd.DataFrame({"mean": [glue_average(table["mean"].to_dict())], "std": [float("nan")],
                        "n_seeds": [int(table["n_seeds"].min())],
                        "majority_baseline": [float(table["majority_baseline"].mean())]},
                       index=["glue_avg"])
    out = pd.concat([table, avg])
    out.index.name = "task"
    return out
