"""Helpers shared by test files (imported as ``helpers``: pytest puts ``tests/`` on the path)."""
from dwt_lib.train import pretrain as pt


def interrupt_at(monkeypatch, n: int) -> None:
    """Ctrl-C during the ``n``-th training step (the held-out eval is not counted)."""
    calls = {"n": 0}
    real = pt.hard_loss

    def hard(logits, y, *a, **k):
        if logits.requires_grad:
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
        return real(logits, y, *a, **k)

    monkeypatch.setattr(pt, "hard_loss", hard)
