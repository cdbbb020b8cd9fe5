"""Eq. 1-3 against independent formulas, gradients, precision, and reduction invariants."""
import pytest
import torch
import torch.nn.functional as F

from dwt_lib.models.losses import DWTLoss, dwt_loss, hard_loss, soft_loss

V = 37


def _logits(*shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, V, generator=g) * scale


def _reference_kl(s, t, tau):
    """Independent formula: F.kl_div on log-probs, summed, / n tokens, * tau^2."""
    n = s.shape[0]
    return F.kl_div(F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1), log_target=True,
                    reduction="sum") / n * tau ** 2


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 4.0])
def test_soft_loss_matches_reference(tau):
    s, t = _logits(10, seed=1), _logits(10, seed=2)
    assert torch.allclose(soft_loss(s, t, tau), _reference_kl(s, t, tau), rtol=1e-5, atol=1e-7)
    # Also against the textbook sum p_t log(p_t / p_s).
    pt, ps = F.softmax(t.double() / tau, -1), F.softmax(s.double() / tau, -1)
    direct = (pt * (pt / ps).log()).sum(-1).mean() * tau ** 2
    assert soft_loss(s, t, tau).item() == pytest.approx(direct.item(), rel=1e-5)


def test_kl_nonnegative_and_zero_for_equal_logits():
    for seed in range(5):
        s, t = _logits(4, 3, seed=seed), _logits(4, 3, seed=seed + 10)
        assert soft_loss(s, t, 2.0).item() >= 0
    s = _logits(6, seed=3)
    assert soft_loss(s, s.clone(), 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_invariant_to_row_constant():
    s, t = _logits(5, seed=4), _logits(5, seed=5)
    shift = torch.arange(5.0).unsqueeze(-1) * 7.0        # a different constant per row
    base = soft_loss(s, t, 2.0)
    assert torch.allclose(soft_loss(s + shift, t, 2.0), base, atol=1e-5)
    assert torch.allclose(soft_loss(s, t - shift, 2.0), base, atol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("scale", [True, False])
def test_gradient_is_tau_times_prob_difference(tau, scale):
    s = _logits(2, 4, seed=6).requires_grad_(True)
    t = _logits(2, 4, seed=7).requires_grad_(True)
    mask = torch.tensor([[True, False, True, True], [False, True, False, True]])
    n = int(mask.sum())
    soft_loss(s, t, tau, mask=mask, scale_by_t2=scale).backward()
    diff = (F.softmax(s.detach() / tau, -1) - F.softmax(t.detach() / tau, -1)) * mask.unsqueeze(-1)
    expected = (tau if scale else 1.0 / tau) * diff / n
    assert torch.allclose(s.grad, expected, atol=1e-6)
    assert t.grad is None                                 # teacher is a constant


def test_bf16_inputs_give_float32_answer():
    s, t = _logits(3, 8, seed=8), _logits(3, 8, seed=9)
    sb, tb = s.bfloat16(), t.bfloat16()
    out = soft_loss(sb, tb, 2.0)
    assert out.dtype == torch.float32
    # Same answer as float32 math on the bf16-rounded values ...
    assert torch.allclose(out, soft_loss(sb.float(), tb.float(), 2.0), rtol=1e-5)
    # ... and close to the unrounded float32 answer.
    assert out.item() == pytest.approx(soft_loss(s, t, 2.0).item(), rel=2e-2)
    labels = torch.randint(0, V, (3, 8))
    h = hard_loss(sb, labels)
    assert h.dtype == torch.float32
    assert h.item() == pytest.approx(hard_loss(s, labels).item(), rel=2e-2)


def test_masked_and_gathered_agree():
    s, t = _logits(3, 6, seed=10), _logits(3, 6, seed=11)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(0)) < 0.4
    assert mask.any()
    full = soft_loss(s, t, 3.0, mask=mask)
    gathered = soft_loss(s[mask], t[mask], 3.0)
    assert torch.allclose(full, gathered, atol=1e-6)
    labels = torch.where(mask, torch.randint(0, V, (3, 6)), torch.full((3, 6), -100))
    assert torch.allclose(hard_loss(s, labels), hard_loss(s[mask], labels[mask]), atol=1e-6)


def test_no_selected_tokens_gives_zero_with_grad():
    s = _logits(2, 3, seed=12).requires_grad_(True)
    out = soft_loss(s, _logits(2, 3, seed=13), 2.0, mask=torch.zeros(2, 3, dtype=torch.bool))
    assert out.item() == 0.0 and not torch.isnan(out)
    out.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    h = hard_loss(s, torch.full((2, 3), -100))
    assert h.item() == 0.0 and h.requires_grad


def test_hard_loss_matches_cross_entropy():
    s = _logits(4, 5, seed=14)
    labels = torch.randint(0, V, (4, 5))
    labels[0, :3] = -100
    labels[2, 1] = -100
    ref = F.cross_entropy(s.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(hard_loss(s, labels), ref, atol=1e-6)


def test_dwt_loss_is_weighted_sum():
    s, t = _logits(2, 5, seed=15), _logits(2, 5, seed=16)
    labels = torch.randint(0, V, (2, 5))
    labels[:, ::2] = -100
    mask = labels != -100
    out = dwt_loss(s, labels, t, alpha_hard=0.7, alpha_soft=2.5, temperature=2.0, soft_mask=mask)
    assert isinstance(out, DWTLoss)
    assert torch.allclose(out.hard, hard_loss(s, labels))
    assert torch.allclose(out.soft, soft_loss(s, t, 2.0, mask=mask))
    assert torch.allclose(out.total, 0.7 * out.hard + 2.5 * out.soft)
    alone = dwt_loss(s, labels, None, alpha_hard=0.7, alpha_soft=2.5)
    assert alone.soft.item() == 0.0
    assert torch.allclose(alone.total, 0.7 * alone.hard)


def test_loss_pinned_across_batch_splits():
    """The loss of a batch equals the token-weighted mean of the losses of its parts, so
    gradient accumulation over micro-batches weighted by token count reproduces the full batch."""
    s, t = _logits(6, 7, seed=17), _logits(6, 7, seed=18)
    labels = torch.randint(0, V, (6, 7))
    labels[torch.rand(6, 7, generator=torch.Generator().manual_seed(1)) < 0.5] = -100
    mask = labels != -100
    full = dwt_loss(s, labels, t, alpha_soft=1.5, temperature=2.0, soft_mask=mask).total
    parts = [(slice(0, 1), ), (slice(1, 4), ), (slice(4, 6), )]
    weighted = sum(dwt_loss(s[p], labels[p], t[p], alpha_soft=1.5, temperature=2.0,
                            soft_mask=mask[p]).total * mask[p].sum() for (p,) in parts)
    assert torch.allclose(full, weighted / mask.sum(), atol=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match="share a vocabulary"):
        soft_loss(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="mask shape"):
        soft_loss(torch.zeros(2, 3, 5), torch.zeros(2, 3, 5), mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        soft_loss(torch.zeros(2, 5), torch.zeros(2, 5), temperature=0.0)
