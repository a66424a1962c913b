"""Losses: the gradient penalty against hand computations, weight clipping, the AC-GAN class
term, label smoothing and instance noise, the critic schedule, optimisers, what each step
touches, DiffAugment, and both steps under DistributedDataParallel."""

import math

import pytest
import torch
from torch import nn

from pokegan_ray.losses import (
    AUGMENTATIONS,
    LOSSES,
    GanConfig,
    NonSaturatingLoss,
    WassersteinLoss,
    build_loss,
    build_optimizers,
    critic_steps,
    diff_augment,
    gradient_penalty,
)
from pokegan_ray.models import build_networks

TINY = {"generator_channels": 4, "discriminator_channels": 4, "latent_size": 8}


def _config(loss: str, conditional: bool = False, num_classes: int = 3, **loss_overrides) -> GanConfig:
    return GanConfig.from_dict(
        {
            "model": {
                **TINY,
                "conditional": conditional,
                "num_classes": num_classes if conditional else 0,
                "discriminator_norm": "layer" if loss == "wgan-gp" else "batch",
            },
            "loss": {"name": loss, **loss_overrides},
        }
    )


class LinearCritic(nn.Module):
    """D(x) = w . x: its input gradient is w for every x, so ||grad|| = ||w||."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, images):
        return (images.flatten(1) @ self.weight.flatten())[:, None]


class FixedGenerator(nn.Module):
    """Ignores the latent and returns the same images: makes a D step's inputs known."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images = images
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, latent, labels=None):
        return self.images[: latent.shape[0]] * self.scale


# -- gradient penalty ---------------------------------------------------------------------
def test_gradient_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared():
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    weight = 3.0 * weight / weight.norm()  # ||w|| = 3, so (||w|| - 1)^2 = 4
    critic = LinearCritic(weight)
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)

    penalty = gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx(4.0, rel=1e-5)
    # create_graph: the penalty's gradient reaches the critic's weights, d/dw (||w||-1)^2 = 2(||w||-1) w/||w||.
    penalty.backward()
    assert torch.allclose(critic.weight.grad, 2 * (3 - 1) * weight / 3, atol=1e-5)


def test_gradient_penalty_uses_per_sample_norms():
    # D(x) = sum(x^2): grad = 2 x_hat, a different norm per sample. A penalty on the batch's
    # joint norm, or on the mean gradient, gives another number.
    class SquareCritic(nn.Module):
        def forward(self, images):
            return images.pow(2).flatten(1).sum(1, keepdim=True)

    real, fake = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4) * 0.1
    torch.manual_seed(1)
    penalty = gradient_penalty(SquareCritic(), real, fake)
    torch.manual_seed(1)
    alpha = torch.rand(6, 1, 1, 1)  # the same draw the penalty made
    interpolates = alpha * real + (1 - alpha) * fake
    expected = ((2 * interpolates).flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


def test_wgan_gp_discriminator_step_adds_lambda_times_the_penalty():
    torch.manual_seed(0)
    config = _config("wgan-gp", augment_policy="")
    weight = torch.randn(3, 64, 64)
    weight = 2.0 * weight / weight.norm()  # GP = (2 - 1)^2 = 1
    critic = LinearCritic(weight)
    real, fake = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.0)
    logs = build_loss(config).discriminator_step(FixedGenerator(fake), critic, optimizer, real)
    flat = weight.flatten()
    wasserstein = (real.flatten(1) @ flat).mean() - (fake.flatten(1) @ flat).mean()
    assert logs["gradient_penalty"] == pytest.approx(1.0, rel=1e-4)
    assert logs["wasserstein_estimate"] == pytest.approx(wasserstein.item(), rel=1e-4)
    assert logs["d_loss"] == pytest.approx(-wasserstein.item() + 10.0 * 1.0, rel=1e-4)


# -- weight clipping ------------------------------------------------------------------------
def test_wgan_critic_weights_lie_within_clip_value_after_a_step():
    torch.manual_seed(0)
    config = _config("wgan", clip_value=0.01)
    generator, discriminator = build_networks(config.model)
    with torch.no_grad():
        for parameter in discriminator.parameters():
            parameter.mul_(10).add_(0.05)  # push many weights outside +-0.01 first
    assert max(p.abs().max().item() for p in discriminator.parameters()) > 0.01
    g_optimizer, d_optimizer = build_optimizers(generator, discriminator, config.loss)
    build_loss(config).discriminator_step(generator, discriminator, d_optimizer, torch.rand(4, 3, 64, 64) * 2 - 1)
    for parameter in discriminator.parameters():
        assert parameter.abs().max().item() <= 0.01 + 1e-9
    # The generator is never clipped.
    assert max(p.abs().max().item() for p in generator.parameters()) > 0.01


# -- which network each step changes ------------------------------------------------------
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_discriminator_step_changes_only_d_and_generator_step_only_g(loss_name):
    torch.manual_seed(0)
    config = _config(loss_name)
    generator, discriminator = build_networks(config.model)
    g_optimizer, d_optimizer = build_optimizers(generator, discriminator, config.loss)
    loss = build_loss(config)
    real = torch.rand(4, 3, 64, 64) * 2 - 1

    g_before = [p.clone() for p in generator.parameters()]
    d_before = [p.clone() for p in discriminator.parameters()]
    loss.discriminator_step(generator, discriminator, d_optimizer, real)
    assert all(torch.equal(a, b) for a, b in zip(g_before, generator.parameters()))
    assert all(p.grad is None for p in generator.parameters())  # fakes were made without a graph
    assert any(not torch.equal(a, b) for a, b in zip(d_before, discriminator.parameters()))

    d_before = [p.clone() for p in discriminator.parameters()]
    loss.generator_step(generator, discriminator, g_optimizer, 4)
    assert all(torch.equal(a, b) for a, b in zip(d_before, discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, generator.parameters()))


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "acgan"])
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_steps_log_detached_scalars_with_the_loss_terms(loss_name, conditional):
    torch.manual_seed(0)
    config = _config(loss_name, conditional=conditional)
    generator, discriminator = build_networks(config.model)
    g_optimizer, d_optimizer = build_optimizers(generator, discriminator, config.loss)
    loss = build_loss(config)
    labels = torch.randint(3, (4,))
    d_logs = loss.discriminator_step(generator, discriminator, d_optimizer, torch.rand(4, 3, 64, 64) * 2 - 1, labels)
    g_logs = loss.generator_step(generator, discriminator, g_optimizer, 4, labels)

    expected_d = {"d_loss", "d_score_real", "d_score_fake", "d_accuracy_real", "d_accuracy_fake"}
    expected_d |= {
        "dcgan": {"d_loss_real", "d_loss_fake"},
        "hinge": {"d_loss_real", "d_loss_fake"},
        "wgan": {"wasserstein_estimate"},
        "wgan-gp": {"wasserstein_estimate", "gradient_penalty"},
    }[loss_name]
    expected_g = {"g_loss", "g_loss_adversarial"}
    if conditional:
        expected_d |= {"d_aux_loss_real", "d_aux_loss_fake", "d_aux_accuracy_real", "d_aux_accuracy_fake"}
        expected_g |= {"g_aux_loss", "g_aux_accuracy"}
    assert set(d_logs) == expected_d and set(g_logs) == expected_g
    for value in [*d_logs.values(), *g_logs.values()]:
        assert value.shape == () and not value.requires_grad and math.isfinite(value.item())
    for key in ("d_accuracy_real", "d_accuracy_fake"):
        assert 0.0 <= d_logs[key] <= 1.0


def test_conditional_discriminator_step_needs_labels():
    config = _config("dcgan", conditional=True)
    generator, discriminator = build_networks(config.model)
    _, d_optimizer = build_optimizers(generator, discriminator, config.loss)
    with pytest.raises(ValueError, match="real_labels"):
        build_loss(config).discriminator_step(generator, discriminator, d_optimizer, torch.zeros(2, 3, 64, 64))


# -- AC-GAN ---------------------------------------------------------------------------------
def test_acgan_discriminator_class_loss_falls_on_a_separable_toy_problem():
    # Type 0 is dark, type 1 is bright.
    torch.manual_seed(0)
    config = _config("dcgan", conditional=True, num_classes=2, augment_policy="")
    generator, discriminator = build_networks(config.model)
    _, d_optimizer = build_optimizers(generator, discriminator, config.loss)
    loss = build_loss(config)

    def real_batch():
        labels = torch.randint(2, (16,))
        images = torch.where(labels[:, None, None, None] == 0, -0.8, 0.8) + 0.1 * torch.randn(16, 3, 64, 64)
        return images.clamp(-1, 1), labels

    logs = [loss.discriminator_step(generator, discriminator, d_optimizer, *real_batch()) for _ in range(40)]
    first, last = logs[0]["d_aux_loss_real"], sum(log["d_aux_loss_real"] for log in logs[-5:]) / 5
    assert first > 0.5  # ~ln 2 at the start
    assert last < 0.25 * first
    assert logs[-1]["d_aux_accuracy_real"] == 1.0


def test_acgan_generator_class_loss_teaches_g_to_draw_the_asked_type():
    # A fixed classifier for D (dark = type 0, bright = type 1) and a constant adversarial score,
    # so the class term is G's only signal: G must learn to draw dark or bright on request.
    class BrightnessClassifier(nn.Module):
        def forward(self, images):
            brightness = 4 * images.mean(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(brightness), -brightness, brightness], dim=1)

    torch.manual_seed(0)
    # A large learning rate: this checks the direction of G's update, not GAN dynamics.
    config = _config("dcgan", conditional=True, num_classes=2, augment_policy="", generator_learning_rate=1e-2)
    generator, discriminator = build_networks(config.model)
    g_optimizer, _ = build_optimizers(generator, discriminator, config.loss)
    loss = build_loss(config)
    logs = [loss.generator_step(generator, BrightnessClassifier(), g_optimizer, 16) for _ in range(20)]
    assert logs[0]["g_aux_loss"] > 0.6  # ~ln 2: G ignores the type at first
    assert logs[-1]["g_aux_loss"] < 0.5 * logs[0]["g_aux_loss"]
    assert logs[-1]["g_loss_adversarial"] == pytest.approx(math.log(2))  # untouched: D's score is 0
    with torch.no_grad():
        images = generator(torch.randn(32, TINY["latent_size"]), torch.tensor([0, 1] * 16))
    brightness = images.mean(dim=(1, 2, 3))
    assert brightness[1::2].mean() > brightness[0::2].mean() + 0.1


# -- BCE aids -------------------------------------------------------------------------------
def test_label_smoothing_moves_only_the_real_target():
    config = _config("dcgan", real_label_smoothing=0.1)
    loss = NonSaturatingLoss(config)
    real_scores, fake_scores = torch.full((4,), 3.0), torch.full((4,), -2.0)
    total, terms = loss.discriminator_loss(real_scores, fake_scores)
    p_real, p_fake = torch.sigmoid(torch.tensor(3.0)), torch.sigmoid(torch.tensor(-2.0))
    expected_real = -(0.9 * torch.log(p_real) + 0.1 * torch.log(1 - p_real))
    expected_fake = -torch.log(1 - p_fake)
    assert terms["d_loss_real"].item() == pytest.approx(expected_real.item(), rel=1e-5)
    assert terms["d_loss_fake"].item() == pytest.approx(expected_fake.item(), rel=1e-5)
    assert total.item() == pytest.approx((expected_real + expected_fake).item(), rel=1e-5)
    # The generator keeps target 1.
    assert loss.generator_loss(fake_scores).item() == pytest.approx(-torch.log(p_fake).item(), rel=1e-5)


def test_accuracy_definitions():
    config = _config("dcgan")
    _, terms = NonSaturatingLoss(config).discriminator_loss(torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -2.0]))
    assert terms["d_accuracy_real"].item() == 0.5 and terms["d_accuracy_fake"].item() == 1.0
    # Wasserstein: against the midpoint of the means, (10 + 2) / 2 = 6; shift-invariant.
    for shift in (0.0, 100.0):
        real, fake = torch.tensor([4.0, 16.0]) + shift, torch.tensor([1.0, 3.0]) + shift
        _, terms = WassersteinLoss(_config("wgan")).discriminator_loss(real, fake)
        assert terms["d_accuracy_real"].item() == 0.5 and terms["d_accuracy_fake"].item() == 1.0


def test_instance_noise_reaches_the_discriminator_inputs():
    class RecordingCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(1))
            self.inputs = []

        def forward(self, images):
            self.inputs.append(images.detach().clone())
            return images.mean((1, 2, 3))[:, None] + self.bias

    config = _config("dcgan", augment_policy="")
    real = torch.zeros(8, 3, 64, 64)
    loss = build_loss(config)
    critic = RecordingCritic()
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.0)
    loss.discriminator_step(FixedGenerator(real), critic, optimizer, real)
    assert all(torch.equal(x, real) for x in critic.inputs)
    critic.inputs.clear()
    loss.discriminator_step(FixedGenerator(real), critic, optimizer, real, instance_noise_std=0.5)
    loss.generator_step(FixedGenerator(real), critic, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0), 8, instance_noise_std=0.5)
    assert len(critic.inputs) == 3  # real, fake, and the generator step's fake
    for seen in critic.inputs:
        assert seen.std().item() == pytest.approx(0.5, rel=0.05)


# -- schedule and optimisers ----------------------------------------------------------------
def test_critic_schedule():
    wgan = _config("wgan").loss
    assert [critic_steps(step, wgan) for step in (0, 24, 25, 499, 500, 501, 1000)] == [100, 100, 5, 5, 100, 5, 100]
    constant = _config("wgan", paper_critic_schedule=False).loss
    assert {critic_steps(step, constant) for step in range(0, 1001, 7)} == {5}
    assert critic_steps(0, _config("wgan-gp").loss) == 5
    assert critic_steps(0, _config("dcgan").loss) == 1
    assert build_loss(_config("wgan")).critic_steps(3) == 100


def test_optimisers_follow_the_loss():
    for name, kind, learning_rate, betas in [
        ("dcgan", torch.optim.Adam, 2e-4, (0.5, 0.999)),
        ("wgan", torch.optim.RMSprop, 5e-5, None),
        ("wgan-gp", torch.optim.Adam, 1e-4, (0.0, 0.9)),
    ]:
        config = _config(name)
        generator, discriminator = build_networks(config.model)
        for optimizer, network in zip(build_optimizers(generator, discriminator, config.loss), (generator, discriminator)):
            assert type(optimizer) is kind
            assert optimizer.param_groups[0]["lr"] == learning_rate
            assert optimizer.param_groups[0]["params"] == list(network.parameters())
            if betas:
                assert optimizer.param_groups[0]["betas"] == betas
    custom = _config("dcgan", generator_learning_rate=1e-3, discriminator_learning_rate=4e-4).loss
    generator, discriminator = build_networks(_config("dcgan").model)
    g_optimizer, d_optimizer = build_optimizers(generator, discriminator, custom)
    assert g_optimizer.param_groups[0]["lr"] == 1e-3 and d_optimizer.param_groups[0]["lr"] == 4e-4


# -- DiffAugment ----------------------------------------------------------------------------
def test_diff_augment_empty_policy_is_the_identity():
    x = torch.randn(2, 3, 8, 8)
    assert diff_augment(x, "") is x
    assert diff_augment(x, " , ") is x


@pytest.mark.parametrize("policy", [*sorted(AUGMENTATIONS), "color,translation,cutout"])
def test_diff_augment_is_differentiable_and_changes_the_images(policy):
    torch.manual_seed(0)
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = diff_augment(x, policy)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diff_augment_draws_a_transform_per_sample():
    torch.manual_seed(0)
    x = (torch.rand(1, 3, 16, 16) * 2 - 1).expand(8, -1, -1, -1)
    y = diff_augment(x, "color,translation,cutout")
    assert not torch.allclose(y[0], y[1])


def test_diff_augment_translation_shifts_pixels_and_cutout_zeroes_a_square():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 16, 16) + 1  # all values in [1, 2): a zero can only come from padding or the cut
    shifted = diff_augment(x, "translation")
    for sample, original in zip(shifted, x):
        values = set(sample[sample != 0].tolist())
        assert values <= set(original.flatten().tolist())  # only moved, never altered
        assert (sample == 0).float().mean() <= 1 - (14 / 16) ** 2 + 1e-6  # at most 2 px of 16 per side
    cut = diff_augment(x, "cutout")
    zero_fraction = (cut == 0).float().mean(dim=(1, 2, 3))
    assert (zero_fraction > 0).all() and (zero_fraction <= 0.25 + 1e-6).all()
    assert torch.equal(cut[cut != 0], x[cut != 0])


def test_diff_augment_rejects_unknown_transforms():
    with pytest.raises(ValueError, match="'colour'.*color, translation, cutout"):
        diff_augment(torch.zeros(1, 3, 8, 8), "colour")


# -- DistributedDataParallel ----------------------------------------------------------------
def test_steps_under_ddp_match_plain_modules(tmp_path):
    # Both networks wrapped, conditional WGAN-GP: D is called three times before backward and
    # the penalty needs create_graph. A one-process gloo group gives the same numbers as no DDP.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    config = _config("wgan-gp", conditional=True)
    real, labels = torch.rand(4, 3, 64, 64) * 2 - 1, torch.tensor([0, 1, 2, 0])

    def run(wrap):
        torch.manual_seed(0)
        generator, discriminator = build_networks(config.model)
        g_optimizer, d_optimizer = build_optimizers(generator, discriminator, config.loss)
        generator, discriminator = wrap(generator), wrap(discriminator)
        loss = build_loss(config)
        logs = [loss.discriminator_step(generator, discriminator, d_optimizer, real, labels) for _ in range(2)]
        logs.append(loss.generator_step(generator, discriminator, g_optimizer, 4, labels))
        return logs

    plain = run(lambda module: module)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = run(DistributedDataParallel)
    finally:
        dist.destroy_process_group()
    for plain_logs, wrapped_logs in zip(plain, wrapped):
        assert plain_logs.keys() == wrapped_logs.keys()
        for key in plain_logs:
            assert wrapped_logs[key].item() == pytest.approx(plain_logs[key].item(), rel=1e-4, abs=1e-6), key


# -- hinge loss, R1, adaptive augmentation, learning-rate schedules --------------------------
def test_hinge_loss_against_a_hand_computation():
    loss = build_loss(_config("hinge"))
    real_scores, fake_scores = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    total, terms = loss.discriminator_loss(real_scores, fake_scores)
    # max(0, 1 - real) = [0, 0.5, 2]; max(0, 1 + fake) = [0, 1, 2]
    assert terms["d_loss_real"].item() == pytest.approx(2.5 / 3)
    assert terms["d_loss_fake"].item() == pytest.approx(3.0 / 3)
    assert total.item() == pytest.approx(5.5 / 3)
    assert loss.generator_loss(fake_scores).item() == pytest.approx(1.0 / 3)  # -mean(fake)


def test_r1_penalty_of_a_linear_critic_is_gamma_half_norm_squared_every_interval():
    torch.manual_seed(0)
    config = _config("hinge", augment_policy="", r1_gamma=2.0, r1_interval=4)
    weight = torch.randn(3, 64, 64)
    weight = 3.0 * weight / weight.norm()  # ||grad_x D|| = ||w|| = 3 for every x
    critic = LinearCritic(weight)
    real, fake = torch.randn(4, 3, 64, 64) * 1e-3, torch.randn(4, 3, 64, 64) * 1e-3  # scores ~0: hinge = 2
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.0)
    loss = build_loss(config)
    logs = [loss.discriminator_step(FixedGenerator(fake), critic, optimizer, real) for _ in range(5)]
    assert logs[0]["r1_penalty"].item() == pytest.approx(9.0, rel=1e-5)
    hinge = logs[0]["d_loss_real"] + logs[0]["d_loss_fake"]
    # Lazy: gamma / 2 * ||w||^2 * interval on the 1st and 5th steps, nothing in between.
    assert logs[0]["d_loss"].item() == pytest.approx(hinge.item() + 0.5 * 2.0 * 9.0 * 4, rel=1e-5)
    assert [("r1_penalty" in log) for log in logs] == [True, False, False, False, True]
    with pytest.raises(ValueError, match="r1_gamma does not apply to loss.name='wgan-gp'"):
        _config("wgan-gp", r1_gamma=1.0)


class BiasOnlyCritic(nn.Module):
    """One shared output for every image: it cannot tell real from fake, whatever it learns."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, images):
        return self.bias.expand(images.shape[0], 1)


def _adaptive_run(critic, start_probability: float, steps: int = 40):
    torch.manual_seed(0)
    config = _config("hinge", augment_probability="adaptive", ada_interval=2, ada_adjust_images=400,
                     discriminator_learning_rate=1e-2)
    loss = build_loss(config)
    loss.augment.load_state_dict({"augment_probability": start_probability, "ada_overfitting": 0.0,
                                  "ada_sums": [0.0, 0.0]})
    real = torch.rand(8, 3, 64, 64) * 0.2 + 0.8  # bright reals, dark fakes: easy to memorise
    generator = FixedGenerator(-torch.rand(8, 3, 64, 64) * 0.2 - 0.8)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    logs = [loss.discriminator_step(generator, critic, optimizer, real) for _ in range(steps)]
    return [log["augment_probability"].item() for log in logs], [log["ada_overfitting"].item() for log in logs]


def test_adaptive_augmentation_rises_when_d_overfits_and_falls_when_it_cannot():
    # A D that can memorise the 8 reals: r_t = E[sign(D(real))] -> 1 > 0.6, so p rises from 0.
    overfitting = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 1))
    probabilities, overfit_signal = _adaptive_run(overfitting, start_probability=0.0)
    assert overfit_signal[-1] > 0.6
    assert probabilities[-1] > 0.5 and probabilities == sorted(probabilities)
    # A D that cannot tell them apart: r_t = 0 < 0.6, so p falls from where it was.
    probabilities, overfit_signal = _adaptive_run(BiasOnlyCritic(), start_probability=0.5)
    assert overfit_signal[-1] < 0.6
    assert probabilities[-1] < 0.1 and probabilities == sorted(probabilities, reverse=True)


def test_augment_probability_chooses_per_sample_and_fixed_one_is_diff_augment_itself():
    torch.manual_seed(0)
    x = torch.rand(400, 3, 8, 8)
    none = diff_augment(x, "cutout", torch.tensor(0.0))
    assert torch.equal(none, x)
    some = diff_augment(x, "cutout", torch.tensor(0.5))
    changed = (some != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.4 < changed < 0.6
    torch.manual_seed(1)
    always = diff_augment(x, "cutout", 1.0)
    torch.manual_seed(1)
    assert torch.equal(always, diff_augment(x, "cutout"))
    with pytest.raises(ValueError, match="adaptive.*wgan-gp"):
        _config("wgan-gp", augment_probability="adaptive")
    with pytest.raises(ValueError, match="augment_probability"):
        _config("hinge", augment_probability=1.5)


@pytest.mark.parametrize(
    ("schedule", "step", "epoch", "expected"),
    [
        ("constant", 900, 95, (1.0, 1.0)),
        ("step", 90, 9, (1.0, 1.0)),
        ("step", 100, 10, (0.9, 0.8)),  # the MRM seed's intent: G -10 %, D -20 % every ten epochs
        ("step", 250, 25, (0.81, 0.64)),
        ("cosine", 500, 50, (0.5, 0.5)),
        ("linear", 250, 25, (0.75, 0.75)),
        ("linear", 1000, 100, (0.0, 0.0)),
    ],
)
def test_learning_rate_schedules(schedule, step, epoch, expected):
    from pokegan_ray.losses.schedules import learning_rates

    config = _config("dcgan", lr_schedule=schedule, generator_lr_step_factor=0.9,
                     discriminator_lr_step_factor=0.8, generator_learning_rate=1e-3,
                     discriminator_learning_rate=2e-3).loss
    rate_g, rate_d = learning_rates(config, step, 1000, epoch)
    assert (rate_g / 1e-3, rate_d / 2e-3) == pytest.approx(expected)
