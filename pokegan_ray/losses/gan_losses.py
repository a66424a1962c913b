"""The adversarial losses and their two training steps.

A loss owns everything mathematical about training: the objective, the gradient penalty,
weight clipping, the AC-GAN class term, DiffAugment, instance noise, the optimiser it wants
and how many critic steps it takes per generator step. The loop owns only the schedule:

    loss = build_loss(config, device)
    g_optimizer, d_optimizer = build_optimizers(generator, discriminator, config.loss)
    for generator_step in ...:
        for _ in range(loss.critic_steps(generator_step)):
            images, labels = next(batches)
            d_logs = loss.discriminator_step(generator, discriminator, d_optimizer, images, labels)
        g_logs = loss.generator_step(generator, discriminator, g_optimizer, batch_size, labels)
        ema.update(generator)

Each step zeroes its optimiser's gradients, computes the loss, calls backward, steps the
optimiser (then clips, for WGAN) and returns the terms to log as detached 0-dim tensors on the
device: nothing in a step waits for the device (no `.item()`), so a GPU runs ahead of Python.
The loop sums them on the device and reads them once per report.

A loss also holds a little state of its own (its D-step count, the adaptive augmentation
probability and its statistics): `state_dict()` / `load_state_dict()` put it in checkpoints.

Both networks may be DistributedDataParallel-wrapped: the steps touch them only through
forward calls and `optimizer.param_groups`, never through module attributes. The generator
step backpropagates through D and so also fills D's gradients (and, under DDP, all-reduces
them); the next discriminator step discards them. Freezing D instead (requires_grad_(False))
would leave DDP waiting for gradients that never come.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pokegan_ray.losses.diff_augment import diff_augment
from pokegan_ray.models.networks import SELF_SUPERVISED_ARCHITECTURES

if TYPE_CHECKING:
    from pokegan_ray.losses.config import GanConfig, LossConfig

# The WGAN paper's critic schedule (Arjovsky et al. 2017, Algorithm 1 as released): train the
# critic close to optimality at the start and now and then, so its estimate of the distance
# stays meaningful.
PAPER_WARMUP_GENERATOR_STEPS = 25
PAPER_REFRESH_INTERVAL_GENERATOR_STEPS = 500
PAPER_CRITIC_STEPS = 100

# Keeps the gradient norm differentiable where the gradient is exactly zero (sqrt'(0) is infinite).
_NORM_EPSILON = 1e-12


def critic_steps(generator_step: int, config: LossConfig) -> int:
    """How many discriminator steps to take before generator step `generator_step` (counted from 0)."""
    if config.paper_critic_schedule and (
        generator_step < PAPER_WARMUP_GENERATOR_STEPS or generator_step % PAPER_REFRESH_INTERVAL_GENERATOR_STEPS == 0
    ):
        return PAPER_CRITIC_STEPS
    return config.n_critic


def steps_to_reach(critic_batches: int, config: LossConfig) -> tuple[int, int]:
    """(generator steps, critic batches they take): the fewest generator steps whose critic batches, counted
    with `critic_steps` (the WGAN paper's schedule included), reach `critic_batches`."""
    steps = batches = 0
    while batches < critic_batches:
        batches += critic_steps(steps, config)
        steps += 1
    return steps, batches


def gradient_penalty(discriminator: nn.Module, real_inputs: torch.Tensor, fake_inputs: torch.Tensor) -> torch.Tensor:
    """Mean over samples of (||grad_x D(x_hat)||_2 - 1)^2 at random interpolates x_hat (Gulrajani et al. 2017).

    Norms are per sample, over all of that sample's pixels; the result is differentiable
    with respect to D's weights (create_graph), unweighted.
    """
    alpha = torch.rand(real_inputs.shape[0], 1, 1, 1, dtype=real_inputs.dtype, device=real_inputs.device)
    interpolates = (alpha * real_inputs.detach() + (1 - alpha) * fake_inputs.detach()).requires_grad_(True)
    scores = discriminator(interpolates)[:, 0]
    (gradients,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    norms = torch.sqrt(gradients.flatten(1).pow(2).sum(dim=1) + _NORM_EPSILON)
    return (norms - 1).pow(2).mean()


def r1_penalty(discriminator: nn.Module, real_inputs: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||grad_x D(x)||^2 at the real inputs (Mescheder et al. 2018), unweighted,
    differentiable with respect to D's weights."""
    inputs = real_inputs.detach().requires_grad_(True)
    scores = discriminator(inputs)[:, 0]
    (gradients,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return gradients.flatten(1).pow(2).sum(dim=1).mean()


def _detached(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Still on the device: the loop sums them there and copies them to the host once per report.
    return {key: value.detach().float().reshape(()) for key, value in terms.items()}


def _class_accuracy(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (class_logits.argmax(dim=1) == labels).float().mean()


class AugmentProbability:
    """The probability p that a sample gets each DiffAugment transform: fixed, or adaptive (StyleGAN2-ADA).

    Adaptive p starts at 0. Every `ada_interval` D steps it moves by
    sign(r_t - ada_target) * images / ada_adjust_images, where r_t = E[sign(D(real))] over those
    steps: a D that calls nearly every real image real is overfitting, so it gets more augmentation.
    Everything stays on the device; under DDP the statistics are summed over ranks so p is the same
    on every rank.
    """

    def __init__(self, config: LossConfig, device: torch.device):
        self.config = config
        self.adaptive = config.adaptive_augmentation
        start = 0.0 if self.adaptive else config.augment_probability
        self.probability = torch.tensor(start, device=device)
        self.overfitting = torch.tensor(0.0, device=device)  # the last r_t
        # sum of sign(D(real)) and the number of real scores since the last adjustment
        self._sums = torch.zeros(2, device=device)

    def for_transforms(self) -> torch.Tensor | float:
        """What `diff_augment` takes: the device tensor when adaptive, the fixed number otherwise."""
        return self.probability if self.adaptive else self.config.augment_probability

    def observe(self, real_scores: torch.Tensor, discriminator_steps: int) -> None:
        if not self.adaptive:
            return
        self._sums[0] += torch.sign(real_scores).sum()
        self._sums[1] += real_scores.numel()
        if discriminator_steps % self.config.ada_interval:
            return
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self._sums)
        self.overfitting = self._sums[0] / self._sums[1]
        images = self._sums[1]
        adjustment = torch.sign(self.overfitting - self.config.ada_target) * images / self.config.ada_adjust_images
        self.probability = (self.probability + adjustment).clamp(0.0, 1.0)
        self._sums.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"augment_probability": float(self.probability), "ada_overfitting": float(self.overfitting),
                "ada_sums": self._sums.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.adaptive and "augment_probability" in state:
            self.probability.fill_(state["augment_probability"])
            self.overfitting.fill_(state["ada_overfitting"])
            self._sums.copy_(torch.tensor(state["ada_sums"]))


class AdversarialLoss:
    """The two steps, shared by every loss; subclasses supply the maths.

    DEFAULTS maps each loss-dependent LossConfig key to this loss's default; None there means
    the key does not apply to this loss (setting it is an error).
    """

    DEFAULTS: ClassVar[dict[str, Any]]

    def __init__(self, config: GanConfig, device: torch.device | str = "cpu"):
        self.config = config.loss
        self.latent_size = config.model.latent_size
        # 0 when unconditional: labels from the data are then ignored.
        self.num_classes = config.model.num_classes if config.model.conditional else 0
        self.device = torch.device(device)
        # The self-supervised D (lightweight) also returns reconstructions of the real images.
        self.reconstructs = config.model.architecture in SELF_SUPERVISED_ARCHITECTURES
        self.augment = AugmentProbability(config.loss, self.device)
        self.discriminator_steps = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain values (it copies from the device: call it at a report, not every step)."""
        return {"discriminator_steps": self.discriminator_steps, **self.augment.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator_steps = int(state["discriminator_steps"])
        self.augment.load_state_dict(state)

    # -- the maths each loss defines -------------------------------------------------------
    def discriminator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss for D to minimise, terms to log) from the adversarial scores of a real and a fake batch."""
        raise NotImplementedError

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def discriminator_regulariser(
        self, discriminator: nn.Module, real_inputs: torch.Tensor, fake_inputs: torch.Tensor
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """(extra loss for D or None, terms to log)."""
        return None, {}

    def after_discriminator_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after every D optimiser step (weight clipping)."""

    @staticmethod
    def make_optimizer(parameters: Iterable[nn.Parameter], learning_rate: float, config: LossConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=learning_rate, betas=config.adam_betas)

    # -- schedule and sampling ------------------------------------------------------------
    def critic_steps(self, generator_step: int) -> int:
        return critic_steps(generator_step, self.config)

    def sample_latent(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.latent_size, device=self.device)

    def sample_labels(self, batch_size: int) -> torch.Tensor | None:
        """Uniformly random types for a conditional generator, None for an unconditional one."""
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (batch_size,), device=self.device)

    def discriminator_input(self, images: torch.Tensor, instance_noise_std: float) -> torch.Tensor:
        """What D sees: DiffAugment, then instance noise; applied alike to real and fake images."""
        images = diff_augment(images, self.config.augment_policy, self.augment.for_transforms())
        if instance_noise_std > 0:
            images = images + instance_noise_std * torch.randn_like(images)
        return images

    # -- the two steps --------------------------------------------------------------------
    def discriminator_step(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer: torch.optim.Optimizer,
        real_images: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        *,
        instance_noise_std: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """One D update on a real batch and as many fakes. `real_labels`: the batch's types,
        needed for AC-GAN and ignored otherwise; the fakes are drawn with the same types, so
        D's class head sees the data's type frequencies on both sides.

        Logs d_loss (total), d_score_real/fake (mean adversarial output), d_accuracy_real/fake;
        with adaptive augmentation augment_probability and ada_overfitting (r_t); per loss
        d_loss_real/fake (BCE, hinge), wasserstein_estimate, gradient_penalty and r1_penalty
        (unweighted), d_reconstruction (lightweight's MSE), d_aux_loss_real/fake and
        d_aux_accuracy_real/fake (AC-GAN).
        """
        batch_size = real_images.shape[0]
        labels = None
        if self.num_classes:
            if real_labels is None:
                raise ValueError("model.conditional is true: discriminator_step needs real_labels")
            labels = real_labels
        with torch.no_grad():
            fake_images = generator(self.sample_latent(batch_size), labels)
        real_inputs = self.discriminator_input(real_images, instance_noise_std)
        fake_inputs = self.discriminator_input(fake_images, instance_noise_std)

        optimizer.zero_grad(set_to_none=True)
        # Real and fake go through D separately: with BatchNorm, one mixed batch would let D
        # tell them apart by the batch statistics alone.
        fake_outputs = discriminator(fake_inputs)
        if self.reconstructs:
            # Self-supervision on real images only (FastGAN): D's features must be able to redraw them.
            real_outputs, reconstructions = discriminator(real_inputs, reconstruct=True)
        else:
            real_outputs, reconstructions = discriminator(real_inputs), []
        real_scores, fake_scores = real_outputs[:, 0], fake_outputs[:, 0]
        loss, terms = self.discriminator_loss(real_scores, fake_scores)
        terms = {"d_score_real": real_scores.mean(), "d_score_fake": fake_scores.mean(), **terms}

        regulariser, regulariser_terms = self.discriminator_regulariser(discriminator, real_inputs, fake_inputs)
        if regulariser is not None:
            loss = loss + regulariser
        terms.update(regulariser_terms)
        if reconstructions:
            error = sum(F.mse_loss(prediction, target) for prediction, target in reconstructions)
            loss = loss + self.config.reconstruction_weight * error
            terms["d_reconstruction"] = error
        if self.config.r1_gamma and self.discriminator_steps % self.config.r1_interval == 0:
            penalty = r1_penalty(discriminator, real_inputs)
            # Lazy regularisation (StyleGAN2): every k-th step, k times the weight, the same on average.
            loss = loss + 0.5 * self.config.r1_gamma * self.config.r1_interval * penalty
            terms["r1_penalty"] = penalty

        if self.num_classes:
            aux_real = F.cross_entropy(real_outputs[:, 1:], labels)
            aux_fake = F.cross_entropy(fake_outputs[:, 1:], labels)
            loss = loss + self.config.auxiliary_class_weight * (aux_real + aux_fake)
            terms.update(
                d_aux_loss_real=aux_real,
                d_aux_loss_fake=aux_fake,
                d_aux_accuracy_real=_class_accuracy(real_outputs[:, 1:], labels),
                d_aux_accuracy_fake=_class_accuracy(fake_outputs[:, 1:], labels),
            )

        loss.backward()
        optimizer.step()
        self.after_discriminator_step(optimizer)
        self.discriminator_steps += 1
        self.augment.observe(real_scores.detach(), self.discriminator_steps)
        if self.augment.adaptive:
            terms.update(augment_probability=self.augment.probability, ada_overfitting=self.augment.overfitting)
        return _detached({"d_loss": loss, **terms})

    def generator_step(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        labels: torch.Tensor | None = None,
        *,
        instance_noise_std: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """One G update on `batch_size` fakes. `labels`: the types to draw (AC-GAN); None draws
        them uniformly; ignored when unconditional. Logs g_loss (total), g_loss_adversarial and,
        for AC-GAN, g_aux_loss and g_aux_accuracy."""
        if self.num_classes:
            if labels is None:
                labels = self.sample_labels(batch_size)
            elif labels.shape[0] != batch_size:
                raise ValueError(f"generator_step: {labels.shape[0]} labels for batch_size={batch_size}")
        else:
            labels = None

        optimizer.zero_grad(set_to_none=True)
        fake_images = generator(self.sample_latent(batch_size), labels)
        outputs = discriminator(self.discriminator_input(fake_images, instance_noise_std))
        adversarial = self.generator_loss(outputs[:, 0])
        loss = adversarial
        terms = {"g_loss_adversarial": adversarial}
        if self.num_classes:
            aux = F.cross_entropy(outputs[:, 1:], labels)
            loss = loss + self.config.auxiliary_class_weight * aux
            terms.update(g_aux_loss=aux, g_aux_accuracy=_class_accuracy(outputs[:, 1:], labels))
        loss.backward()
        optimizer.step()
        return _detached({"g_loss": loss, **terms})


class NonSaturatingLoss(AdversarialLoss):
    """"dcgan": binary cross-entropy on logits; G maximises log D(G(z)) (the non-saturating form
    of Goodfellow et al. 2014, which keeps G's gradient alive while D wins easily)."""

    DEFAULTS = {
        "generator_learning_rate": 2e-4,
        "discriminator_learning_rate": 2e-4,
        # The DCGAN paper: beta1 = 0.9 oscillated and was unstable, 0.5 trained.
        "adam_betas": (0.5, 0.999),
        "n_critic": 1,
        "paper_critic_schedule": None,
        "clip_value": None,
        "gp_weight": None,
        "r1_gamma": 0.0,
        "r1_interval": 16,
    }

    def discriminator_loss(self, real_scores, fake_scores):
        # One-sided label smoothing (Salimans et al. 2016): only the real target moves, so D
        # is not rewarded for pushing fakes towards "real".
        real_target = torch.full_like(real_scores, 1.0 - self.config.real_label_smoothing)
        loss_real = F.binary_cross_entropy_with_logits(real_scores, real_target)
        loss_fake = F.softplus(fake_scores).mean()  # = BCE with target 0
        terms = {
            "d_loss_real": loss_real,
            "d_loss_fake": loss_fake,
            # sigmoid(score) > 0.5, i.e. D calls it real.
            "d_accuracy_real": (real_scores > 0).float().mean(),
            "d_accuracy_fake": (fake_scores < 0).float().mean(),
        }
        return loss_real + loss_fake, terms

    def generator_loss(self, fake_scores):
        return F.softplus(-fake_scores).mean()  # = BCE with target 1


class HingeLoss(AdversarialLoss):
    """"hinge" (Lim & Ye 2017; SAGAN, BigGAN, lightweight-gan): D pays for real scores below +1 and
    fake scores above -1, so it stops pushing samples it already classifies with margin; G raises
    D's score of its fakes."""

    DEFAULTS = {
        "generator_learning_rate": 2e-4,
        "discriminator_learning_rate": 2e-4,
        # lightweight-gan's (0.5, 0.9).
        "adam_betas": (0.5, 0.9),
        "n_critic": 1,
        "paper_critic_schedule": None,
        "clip_value": None,
        "gp_weight": None,
        "r1_gamma": 0.0,
        "r1_interval": 16,
    }

    def discriminator_loss(self, real_scores, fake_scores):
        loss_real = F.relu(1.0 - real_scores).mean()
        loss_fake = F.relu(1.0 + fake_scores).mean()
        terms = {
            "d_loss_real": loss_real,
            "d_loss_fake": loss_fake,
            "d_accuracy_real": (real_scores > 0).float().mean(),
            "d_accuracy_fake": (fake_scores < 0).float().mean(),
        }
        return loss_real + loss_fake, terms

    def generator_loss(self, fake_scores):
        return -fake_scores.mean()


class WassersteinLoss(AdversarialLoss):
    """Shared maths of the two Wasserstein losses: the critic maximises E[D(real)] - E[D(fake)]."""

    def discriminator_loss(self, real_scores, fake_scores):
        estimate = real_scores.mean() - fake_scores.mean()
        # A critic's scores have no fixed zero (adding a constant changes nothing), so accuracy
        # is judged against the midpoint of this batch's mean real and mean fake score: the
        # best single threshold when both spread alike. 0.5 means the critic cannot tell them apart.
        threshold = (real_scores.mean() + fake_scores.mean()).detach() / 2
        terms = {
            "wasserstein_estimate": estimate,
            "d_accuracy_real": (real_scores > threshold).float().mean(),
            "d_accuracy_fake": (fake_scores < threshold).float().mean(),
        }
        return -estimate, terms

    def generator_loss(self, fake_scores):
        return -fake_scores.mean()


class WeightClippingLoss(WassersteinLoss):
    """"wgan" (Arjovsky et al. 2017): after every critic step, clip every critic weight to +-clip_value."""

    DEFAULTS = {
        "generator_learning_rate": 5e-5,
        "discriminator_learning_rate": 5e-5,
        "adam_betas": None,
        "n_critic": 5,
        "paper_critic_schedule": True,
        "clip_value": 0.01,
        "gp_weight": None,
        "r1_gamma": None,
        "r1_interval": None,
    }

    @staticmethod
    def make_optimizer(parameters, learning_rate, config):
        # The WGAN paper: momentum (Adam) made the clipped critic's training unstable; RMSProp did not.
        return torch.optim.RMSprop(parameters, lr=learning_rate)

    @torch.no_grad()
    def after_discriminator_step(self, optimizer):
        # The optimiser holds exactly the critic's parameters, wrapped by DDP or not.
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.clamp_(-self.config.clip_value, self.config.clip_value)


class GradientPenaltyLoss(WassersteinLoss):
    """"wgan-gp" (Gulrajani et al. 2017): the critic pays gp_weight * (||grad D(x_hat)|| - 1)^2."""

    DEFAULTS = {
        "generator_learning_rate": 1e-4,
        "discriminator_learning_rate": 1e-4,
        # The WGAN-GP paper's (0, 0.9): without first-moment momentum the critic follows the
        # moving generator at once instead of chasing stale gradient directions.
        "adam_betas": (0.0, 0.9),
        "n_critic": 5,
        "paper_critic_schedule": False,
        "clip_value": None,
        "gp_weight": 10.0,
        "r1_gamma": None,
        "r1_interval": None,
    }

    def discriminator_regulariser(self, discriminator, real_inputs, fake_inputs):
        # Interpolate between what D actually sees (augmented, noised): that is the input
        # distribution on which the critic must be 1-Lipschitz.
        penalty = gradient_penalty(discriminator, real_inputs, fake_inputs)
        return self.config.gp_weight * penalty, {"gradient_penalty": penalty}


LOSSES: dict[str, type[AdversarialLoss]] = {
    "dcgan": NonSaturatingLoss,
    "hinge": HingeLoss,
    "wgan": WeightClippingLoss,
    "wgan-gp": GradientPenaltyLoss,
}


def build_loss(config: GanConfig, device: torch.device | str = "cpu") -> AdversarialLoss:
    """The loss named by config.loss.name; latents and labels are drawn on `device`."""
    return LOSSES[config.loss.name](config, device)


def build_optimizers(
    generator: nn.Module, discriminator: nn.Module, config: LossConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(generator optimiser, discriminator optimiser): Adam for dcgan and wgan-gp, RMSProp for wgan.

    Build them after moving the networks to their device (and before or after DDP-wrapping:
    the parameters are the same objects)."""
    make_optimizer = LOSSES[config.name].make_optimizer
    return (
        make_optimizer(generator.parameters(), config.generator_learning_rate, config),
        make_optimizer(discriminator.parameters(), config.discriminator_learning_rate, config),
    )
