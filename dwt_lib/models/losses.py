"""The DWT objective: hard loss (Eq. 1), soft loss (Eq. 2) and their weighted sum (Eq. 3).

Shapes. Every loss accepts logits either as ``(B, S, V)`` with a ``(B, S)`` selection
(labels or a boolean mask), or already gathered as ``(N, V)``: only the N predicted
positions, the cramming-style "sparse prediction" path where only masked tokens go
through the MLM head. Both give the same number.

Precision. All softmax/log arithmetic is float32, even for bf16 logits: a bf16 log-softmax
over a 30k vocabulary loses most of the mantissa that a KL between two close distributions
lives in. Rows are selected *before* the upcast, so the float32 copies are ``(N, V)``, not
``(B, S, V)``.

Reduction. Both losses are a per-token mean: summed over the vocabulary, averaged over the
selected token positions. See :func:`soft_loss` for why this, and not ``batchmean`` or
``mean``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _rows(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` as ``(N, V)``: the rows where ``mask`` is true (``mask`` has ``x``'s leading shape),
    or all rows when ``mask`` is None. Boolean indexing copies only the selected rows."""
    if mask is None:
        return x.reshape(-1, x.shape[-1])
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if mask.shape != x.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the leading shape "
                         f"{tuple(x.shape[:-1])} of logits {tuple(x.shape)}")
    return x[mask]


def hard_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1, the MLM loss: cross-entropy of the student's prediction against the true token,
    averaged over the positions whose label is not ``-100``.

    ``student_logits`` is ``(B, S, V)`` with ``(B, S)`` labels, or ``(N, V)`` with ``(N,)``
    labels. Computed in float32. With no labelled position it returns 0 (still attached to the
    graph) instead of the NaN of ``F.cross_entropy(..., reduction="mean")``.
    """
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits "
                         f"{tuple(student_logits.shape)}")
    keep = labels != IGNORE_INDEX
    rows = _rows(student_logits, keep)
    n = rows.shape[0]
    total = F.cross_entropy(rows.float(), labels[keep], reduction="sum")
    return total / max(n, 1)


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
              mask: Optional[torch.Tensor] = None, scale_by_t2: bool = True) -> torch.Tensor:
    r"""Eq. 2: :math:`\mathrm{KL}(p_\omega^\tau \,\|\, p_\theta^\tau)`, the KL divergence from the
    teacher's temperature-softened distribution to the student's, per token.

    For each selected position: ``sum_c p_t(c) * (log p_t(c) - log p_s(c))`` with
    ``p = softmax(z / tau)``; then the mean over selected positions; then times ``tau**2``
    when ``scale_by_t2`` (Hinton et al.: the gradient of the KL w.r.t. the student logits is
    ``(p_s - p_t) / tau``, so the ``tau**2`` factor keeps the soft term's gradient on the scale
    of ``tau * (p_s - p_t)`` instead of shrinking like ``1 / tau`` as tau grows).

    Reduction, and why. The per-token mean makes the soft loss commensurate with the hard
    loss (also a per-token mean), so ``alpha_s`` means what Eq. 3 says:

    - ``F.kl_div(..., reduction="batchmean")`` on ``(B, S, V)`` divides by B only, i.e. sums
      over the S positions of a sequence: the effective ``alpha_s`` grows with sequence length
      (x S, or x the number of masked tokens per sequence).
    - ``reduction="mean"`` divides by every element, ``N * V``: the effective ``alpha_s``
      shrinks by the vocabulary size (1/30522 for BERT), silently switching distillation off.

    Not cross-entropy: the teacher entropy term is included, so the loss is >= 0 and exactly 0
    when the two distributions agree (soft cross-entropy has the same gradient but a
    teacher-dependent offset).

    Arguments: logits ``(B, S, V)`` or gathered ``(N, V)``, student and teacher of one shape;
    ``mask`` a bool tensor of the leading shape selecting positions (None: all rows).
    Teacher logits are detached. Math in float32 for any input dtype. With zero selected
    positions the result is 0 with a gradient of zeros, never NaN.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: teacher and student must share a vocabulary")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = _rows(student_logits, mask)
    t = _rows(teacher_logits.detach(), mask)
    n = s.shape[0]
    kl_sum = _KLSum.apply(s, t, float(temperature))     # sum p_t (log p_t - log p_s), float32
    loss = kl_sum / max(n, 1)
    if scale_by_t2:
        loss = loss * (temperature ** 2)
    return loss


class _KLSum(torch.autograd.Function):
    """``sum_rows sum_c p_t (log p_t - log p_s)`` with ``p = softmax(z / tau)`` in float32, for
    (N, V) logits of any dtype. Same math as ``kl_div(log_softmax(s), log_softmax(t),
    log_target=True, reduction="sum")``, but it keeps only ``log p_s`` and ``p_t`` for the
    backward (``d/ds = (p_s - p_t) / tau``) and reuses buffers in place: fewer (N, V) float32
    buffers alive at once, and fewer passes over them."""

    @staticmethod
    def forward(ctx, s, t, tau):
        t32 = t.float()
        if tau != 1.0:
            t32 = t32 / tau
        log_pt = F.log_softmax(t32, dim=-1)
        del t32
        s32 = s.float()
        if tau != 1.0:
            s32 = s32 / tau
        log_ps = F.log_softmax(s32, dim=-1)
        del s32
        p_t = log_pt.exp()
        diff = log_pt.sub_(log_ps)                         # log p_t - log p_s, in place
        kl = (p_t * diff).sum()
        ctx.save_for_backward(log_ps, p_t)
        ctx.tau, ctx.s_dtype = tau, s.dtype
        return kl

    @staticmethod
    def backward(ctx, grad):
        log_ps, p_t = ctx.saved_tensors
        g = log_ps.exp().sub_(p_t).mul_(grad / ctx.tau)
        return g.to(ctx.s_dtype), None, None


class DWTLoss(NamedTuple):
    """Eq. 3's total and its two terms (unweighted) for logging."""
    total: torch.Tensor
    hard: torch.Tensor
    soft: torch.Tensor


def dwt_loss(student_logits: torch.Tensor, labels: torch.Tensor,
             teacher_logits: Optional[torch.Tensor] = None, alpha_hard: float = 1.0,
             alpha_soft: float = 1.0, temperature: float = 1.0,
             soft_mask: Optional[torch.Tensor] = None, scale_by_t2: bool = True,
             hard_scale: float = 1.0, soft_scale: float = 1.0) -> DWTLoss:
    """Eq. 3: ``total = alpha_hard * H + alpha_soft * S`` with H = :func:`hard_loss` and
    S = :func:`soft_loss`.

    ``soft_mask`` selects the positions of the soft term (e.g. ``labels != -100`` for masked
    tokens only, or the attention mask for all real tokens); None means every row of the
    logits. Without a teacher, ``soft`` is a float32 zero and ``total = alpha_hard * H``.
    ``alpha_soft`` and ``temperature`` are plain numbers: the caller evaluates their schedules
    at the current step.

    ``hard_scale`` and ``soft_scale`` multiply each term before the weighting: the training loop
    (:func:`dwt_lib.train.pretrain.dwt_losses`) gives one micro-batch ``n_selected / n_global`` so that the
    micro-batches of a global batch sum to its per-token mean; 1 (exact) everywhere else.
    """
    hard = hard_loss(student_logits, labels) * hard_scale
    if teacher_logits is None:
        soft = torch.zeros((), dtype=torch.float32, device=student_logits.device)
        return DWTLoss(alpha_hard * hard, hard, soft)
    soft = soft_loss(student_logits, teacher_logits, temperature, soft_mask, scale_by_t2) * soft_scale
    return DWTLoss(alpha_hard * hard + alpha_soft * soft, hard, soft)
