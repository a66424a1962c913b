"""An exponential moving average of the generator's weights, used for samples and evaluation.

Averaging G over the last few thousand steps smooths out the oscillation of adversarial
training; samples from the average are usually cleaner than from G itself (Yazici et al. 2019,
and every StyleGAN since).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEma:
    """`ema = GeneratorEma(generator, decay=0.999)`; after every generator step `ema.update(generator)`;
    sample with `ema.module(latent, labels)`; checkpoint `ema.module.state_dict()`."""

    def __init__(self, generator: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if isinstance(generator, nn.parallel.DistributedDataParallel):
            # The copy must be a plain module: a DDP wrapper cannot be deep-copied into a second replica.
            generator = generator.module
        self.decay = decay
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    def decay_at(self, step: int | None) -> float:
        """The decay used after generator step `step`: ramped up as min(decay, (1 + step) / (10 + step)),
        so a short run's average is not still mostly the random initial weights (0.999 ** 300 = 0.74).
        `step=None` uses the full decay."""
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, generator: nn.Module, step: int | None = None) -> None:
        """Move every parameter towards `generator`'s by (1 - decay_at(step)); copy the buffers as they are.

        `generator` may be the DDP wrapper: its parameters() and buffers() are the wrapped
        module's, in the same order. The ramp depends only on `step`, so a resumed run
        averages exactly as an uninterrupted one.
        """
        weight = 1.0 - self.decay_at(step)
        for average, current in zip(self.module.parameters(), generator.parameters(), strict=True):
            average.lerp_(current.detach(), weight)
        # BatchNorm running statistics are already averages; averaging them again would lag.
        for average, current in zip(self.module.buffers(), generator.buffers(), strict=True):
            average.copy_(current)
