"""The training step itself, without Ray: it never waits for the device between reports, and it
applies the learning-rate schedule."""

import os
import sys
from types import SimpleNamespace

import pytest
import torch

import pokegan_ray
from pokegan_ray.training.config import ExperimentConfig
from pokegan_ray.training.loop import MetricWindow, Progress, build_gan, train_step

# Every Python-level way a tensor's value reaches the host; each one blocks until the device is done.
HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")

PACKAGE_FOLDER = os.path.dirname(pokegan_ray.__file__)
TINY = {"generator_channels": 4, "discriminator_channels": 4, "latent_size": 8}


def _experiment(architecture: str, loss: dict) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": {**TINY, "architecture": architecture},
        "loss": loss,
        "train": {"steps": 100, "batch_size": 4},
        "scale": {"workers": 1},
    })


def _endless_batches():
    while True:
        yield torch.rand(4, 3, 64, 64) * 2 - 1, torch.zeros(4, dtype=torch.long)


class HostSyncCounter:
    """Records calls of HOST_SYNCS made from pokegan_ray's own code while installed.

    Torch's internals are left out on purpose: Adam, for one, keeps its step count in a CPU tensor
    and reads it with `.item()`, which on a GPU run waits for nothing.
    """

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in HOST_SYNCS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                caller = sys._getframe(1).f_code.co_filename
                if PACKAGE_FOLDER in caller:
                    self.calls.append(f"{_name} in {os.path.basename(caller)}:{sys._getframe(1).f_lineno}")
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize(
    ("architecture", "loss"),
    [
        ("dcgan", {"name": "dcgan", "r1_gamma": 1.0, "r1_interval": 2, "augment_probability": "adaptive",
                   "ada_interval": 2, "lr_schedule": "cosine"}),
        ("lightweight", {"name": "hinge", "augment_probability": 0.5}),
        ("dcgan", {"name": "wgan-gp", "n_critic": 2}),
        ("dcgan", {"name": "wgan", "n_critic": 2, "paper_critic_schedule": False}),
    ],
)
def test_a_training_step_never_copies_from_the_device(monkeypatch, architecture, loss):
    experiment = _experiment(architecture, loss)
    gan = build_gan(experiment, torch.device("cpu"))
    session = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))
    gan.wrap_for_ddp(session)
    progress, batches = Progress(), _endless_batches()
    window = MetricWindow(session, batches_per_epoch=10, first_step=1)
    counter = HostSyncCounter(monkeypatch)
    for _ in range(4):
        train_step(gan, experiment, progress, batches, window, session)
    assert counter.calls == []
    assert progress.step == 4 and "d_loss" in window.sums
    # The counter would see a sync: the report's one copy of the window's terms is one.
    means = window.mean_across_ranks()
    assert counter.calls and all(isinstance(value, float) for value in means.values())


def test_the_step_applies_the_learning_rate_schedule():
    experiment = _experiment("dcgan", {"name": "dcgan", "lr_schedule": "linear"})
    gan = build_gan(experiment, torch.device("cpu"))
    session = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))
    gan.wrap_for_ddp(session)
    progress = Progress(step=75, real_batches=75)
    train_step(gan, experiment, progress, _endless_batches(), MetricWindow(session, 10, 76), session)
    base = experiment.gan.loss
    assert gan.optimizer_g.param_groups[0]["lr"] == pytest.approx(base.generator_learning_rate * 0.25)
    assert gan.optimizer_d.param_groups[0]["lr"] == pytest.approx(base.discriminator_learning_rate * 0.25)
