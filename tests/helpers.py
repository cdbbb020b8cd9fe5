"""Helpers shared by test files (imported as ``helpers``: pytest puts ``tests/`` on the path)."""
from dwt_lib.models import losses


def interrupt_at(monkeypatch, n: int) -> None:
    """Ctrl-C during the ``n``-th training step (the held-out eval is not counted)."""
    calls = {"n": 0}
    real = losses.hard_loss

    def hard(logits, y, *a, **k):
        if logits.requires_grad:
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
        return real(logits, y, *a, **k)

    monkeypatch.setattr(losses, "hard_loss", hard)
