"""The training loop's progress messages: a number from the first step on, never "loss nan"."""

import math

import torch
from torch import nn

from pipelines.training import LoopSettings, train_loop


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = {"features": 2}
        self.linear = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_progress_shows_the_running_loss_before_the_first_log_point(tmp_path):
    torch.set_num_threads(1)
    x, y = torch.ones(4, 2), torch.zeros(4, 1)
    messages: list[tuple[int, str]] = []

    def batch_loss(model, generator):
        return nn.functional.mse_loss(model(x), y)

    def val_loss(model):
        return float(nn.functional.mse_loss(model(x), y))

    settings = LoopSettings(steps=6, batch_size=4, lr=1e-2, log_every=5, val_every=6, checkpoint_every=6)
    train_loop(_Tiny, batch_loss, val_loss, settings=settings, out=tmp_path / "run", kind="tiny",
               identity={"data": "toy"}, n_train=4, n_val=4,
               progress=lambda done, total, message: messages.append((done, message)))
    shown = [float(m.removeprefix("loss ")) for _, m in messages]
    assert [d for d, _ in messages] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) and v > 0 for v in shown)
    assert shown[0] > shown[3]  # the running mean of a loss that falls
