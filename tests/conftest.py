import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A complete tiny checkpoint directory (random weights) built from a tiny built-in corpus."""
    from tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (small convolutions are fastest so on a shared 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def interrupt_at_step(monkeypatch):
    """``interrupt_at_step(n)``: the n-th optimisation step (``OptimStep.__call__``) raises KeyboardInterrupt, as a
    run killed in that step; ``monkeypatch.undo()`` lets steps run again."""
    from unisono.train.loop import OptimStep

    def arm(n: int) -> None:
        real, calls = OptimStep.__call__, {"n": 0}

        def interrupted(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(self, *a, **k)

        monkeypatch.setattr(OptimStep, "__call__", interrupted)

    return arm
