"""Classifier two-sample test (C2ST) of realism: can a small 3D CNN tell real post-treatment crops from generated ones?

Recipe of `classifier_two_sample_test`:

1. split the *groups* (patients) in two halves with a seeded permutation, so no patient is on both sides;
2. train `models.two_sample_classifier.TwoSampleClassifier` (real = 1, generated = 0) on the first half for a few
   epochs (Adam, binary cross-entropy, seeded shuffling);
3. report its accuracy on the second half: about 0.5 when the two samples are indistinguishable, 1.0 when they
   are trivially separable (target for the world model: <= 0.70).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.two_sample_classifier import TwoSampleClassifier
from pipelines.progress import ProgressFn, resolve_progress

__all__ = ["C2STResult", "classifier_two_sample_test"]


@dataclass(frozen=True)
class C2STResult:
    """Held-out accuracy of the classifier and the sizes of both halves (images, patients)."""

    accuracy: float
    n_train: int
    n_test: int
    train_groups: int
    test_groups: int
    epochs: int


def _split_groups(groups: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    unique = np.unique(groups)
    if unique.size < 2:
        raise ValueError(f"classifier_two_sample_test needs images from at least 2 patients (groups) to hold some "
                         f"out, got {unique.size}.")
    order = unique[torch.randperm(unique.size, generator=generator).numpy()]
    train = np.isin(groups, order[: unique.size // 2])
    return train, ~train


def classifier_two_sample_test(real: np.ndarray, fake: np.ndarray, real_groups, fake_groups, *, seed: int = 0,
                               epochs: int = 5, batch_size: int = 8, lr: float = 1e-3,
                               channels: tuple[int, ...] = (8, 16, 32),
                               progress: bool | ProgressFn | None = None) -> C2STResult:
    """Train on half of the patients, test on the other half (see the module docstring).

    Args:
        real: ``(N, X, Y, Z)`` or ``(N, 1, X, Y, Z)`` real images (e.g. windowed crops in [-1, 1]).
        fake: ``(M, ...)`` generated images of the same shape.
        real_groups, fake_groups: ``(N,)`` / ``(M,)`` patient ids of each image (split unit).
        seed: seeds the split, the initial weights and the shuffling (same seed, same result).
        epochs, batch_size, lr, channels: classifier training.
        progress: ``progress(done, total, message)`` per epoch, ``True`` for a tqdm bar.

    Returns:
        a `C2STResult`; ``accuracy`` is on the held-out patients, both classes counted.
    """
    # 1. check inputs
    real = np.asarray(real, dtype=np.float32)
    fake = np.asarray(fake, dtype=np.float32)
    real = real[:, None] if real.ndim == 4 else real
    fake = fake[:, None] if fake.ndim == 4 else fake
    if real.ndim != 5 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"classifier_two_sample_test expects (N, [1,] X, Y, Z) images of one shape, got real "
                         f"{real.shape} and fake {fake.shape}.")
    groups = np.concatenate([np.asarray(real_groups), np.asarray(fake_groups)]).astype(str)
    if groups.shape[0] != real.shape[0] + fake.shape[0]:
        raise ValueError(f"classifier_two_sample_test: {groups.shape[0]} group ids for {real.shape[0]} real and "
                         f"{fake.shape[0]} generated images.")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"classifier_two_sample_test needs epochs >= 1 and batch_size >= 1, got {epochs}, "
                         f"{batch_size}.")
    report = resolve_progress(progress, "C2ST", "epoch")
    generator = torch.Generator().manual_seed(int(seed))

    # 2. data and patient-disjoint split
    x = torch.from_numpy(np.concatenate([real, fake]))
    y = torch.cat([torch.ones(real.shape[0]), torch.zeros(fake.shape[0])])
    train, test = _split_groups(groups, generator)
    train_idx, test_idx = torch.from_numpy(np.flatnonzero(train)), torch.from_numpy(np.flatnonzero(test))

    # 3. train (weights initialised from the seed without touching the global RNG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = TwoSampleClassifier(channels=channels, in_channels=x.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for epoch in range(epochs):
        order = train_idx[torch.randperm(train_idx.numel(), generator=generator)]
        for start in range(0, order.numel(), batch_size):
            batch = order[start:start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
        if report:
            report(epoch + 1, epochs, f"loss {loss.item():.3f}")

    # 4. held-out accuracy
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[test_idx[s:s + batch_size]]) for s in range(0, test_idx.numel(), batch_size)])
    accuracy = float(((logits > 0).float() == y[test_idx]).float().mean())
    return C2STResult(accuracy=accuracy, n_train=int(train_idx.numel()), n_test=int(test_idx.numel()),
                      train_groups=int(np.unique(groups[train]).size), test_groups=int(np.unique(groups[test]).size),
                      epochs=int(epochs))
