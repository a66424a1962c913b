"""The per-worker training loop: one function Ray Train runs on every worker.

Read it top to bottom: set up (data shard in memory, networks, optimisers, restore), then
the steps (the loss's critic steps, one generator step, EMA), and every so often a report
to Ray, which may carry a checkpoint, an FID, a sample grid. The losses own the maths;
this loop owns only the schedule. Rank 0 writes the run's artifacts.
"""

from __future__ import annotations

import json
import math
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pokegan_ray.data.reader import InMemoryImages
from pokegan_ray.losses import build_loss, build_optimizers
from pokegan_ray.models import GeneratorEma, build_networks
from pokegan_ray.storage import location
from pokegan_ray.training import artifacts
from pokegan_ray.training.checkpoint import FILE_NAME, FORMAT_VERSION, checkpoint_bytes, load_checkpoint, \
    read_generator_weights, restore_rng_state, rng_state
from pokegan_ray.training.config import ExperimentConfig
from pokegan_ray.training.evaluation import Evaluator

STATUS_FILE = "status.json"


@dataclass(frozen=True)
class RunContext:
    """What the driver tells every worker besides the experiment config (all plain values)."""

    run_uri: str  # the run's folder in the object store
    classes: list[str]  # label names of the data set, index = label
    dataset_hash: str
    class_frequencies: list[float] = field(default_factory=list)
    inception_weights: str | None = None  # None: the default FID weights
    # A new run may start G (and its EMA) from an earlier EMA generator (`pokegan retrain --warm-start`):
    # a checkpoint or a registry model file. D and both optimisers start fresh.
    warm_start_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`."""
    import ray.train
    import ray.train.torch

    # Ray Train logs every report and checkpoint in full at INFO; the progress line says what matters.
    # (Its report logger is named after the module's file path, hence the module's own attribute.)
    from ray.train.v2._internal.execution import context as train_context

    train_context.logger.setLevel(logging.WARNING)
    logging.getLogger("ray.train.v2._internal.execution.storage").setLevel(logging.WARNING)
    experiment = ExperimentConfig.from_dict(loop_config["experiment"])
    run = RunContext(**loop_config["run"])
    train = experiment.train
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if experiment.scale.threads_per_worker:
        torch.set_num_threads(experiment.scale.threads_per_worker)
    on_gpu = device.type == "cuda"
    use_bf16 = on_gpu and train.mixed_precision

    # Identical initial weights everywhere (DDP would broadcast rank 0's anyway), then per-rank randomness.
    torch.manual_seed(train.seed)
    generator, discriminator = build_networks(experiment.gan.model)
    memory_format = torch.channels_last if on_gpu else torch.contiguous_format
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    ema = GeneratorEma(generator, decay=experiment.gan.loss.ema_decay)
    optimizer_g, optimizer_d = build_optimizers(generator, discriminator, experiment.gan.loss)
    loss = build_loss(experiment.gan, device)
    torch.manual_seed(train.seed * 1_000 + rank)

    shard = InMemoryImages.load(ray.train.get_dataset_shard("train"), device)
    batch_size = experiment.batch_per_worker
    batches_per_epoch = len(shard) // batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"worker {rank} holds {len(shard)} images, fewer than its batch of {batch_size}: lower "
                         f"train.batch_size or scale.workers")

    progress = Progress()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, FILE_NAME), "rb") as handle:
                state = load_checkpoint(handle.read(), f"checkpoint {checkpoint.path}", map_location=device)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        ema.module.load_state_dict(state["generator_ema"])
        optimizer_g.load_state_dict(state["optimizer_generator"])
        optimizer_d.load_state_dict(state["optimizer_discriminator"])
        progress = Progress(step=state["step"], real_batches=state["real_batches"], history=state["history"])
        ranks = state["rng"]["ranks"]
        if len(ranks) == world_size:
            restore_rng_state(ranks[rank])
        else:  # another worker count: exact continuation is impossible, keep it reproducible at least
            torch.manual_seed(train.seed * 1_000 + rank + 7_919 * progress.step)
    elif run.warm_start_uri:  # only a fresh start: a restart after a failure continues from its own checkpoint
        weights = read_generator_weights(run.warm_start_uri, map_location=device)
        generator.load_state_dict(weights)
        ema.module.load_state_dict(weights)

    if world_size > 1:
        # BatchNorm buffers stay per rank (broadcast_buffers=False): D runs twice before backward,
        # and SyncBatchNorm does not run on CPU. Never static_graph: it breaks the gradient penalty.
        device_ids = [device.index] if on_gpu else None
        with warnings.catch_warnings():
            # torch suggests forward_sync_buffers, which still syncs at init; rank-local buffers are what we want.
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            generator_ddp = DistributedDataParallel(generator, device_ids=device_ids, broadcast_buffers=False)
            discriminator_ddp = DistributedDataParallel(discriminator, device_ids=device_ids,
                                                        broadcast_buffers=False)
    else:
        generator_ddp, discriminator_ddp = generator, discriminator

    artifacts_writer = RunArtifacts(run, experiment, device) if rank == 0 else None
    batches = real_batches(shard, batch_size, train.seed * 1_000 + rank, start=progress.real_batches)
    window = MetricWindow()
    window_started, window_images, data_seconds = time.perf_counter(), 0, 0.0

    while progress.step < train.steps:
        step = progress.step + 1
        noise_std = experiment.gan.loss.instance_noise_std * max(0.0, 1.0 - step / train.steps)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            for _ in range(loss.critic_steps(progress.step)):
                waited = time.perf_counter()
                real_images, real_labels = next(batches)
                data_seconds += time.perf_counter() - waited
                if on_gpu:
                    real_images = real_images.contiguous(memory_format=memory_format)
                terms = loss.discriminator_step(generator_ddp, discriminator_ddp, optimizer_d, real_images,
                                                real_labels if loss.num_classes else None,
                                                instance_noise_std=noise_std)
                window.add(terms)
                progress.real_batches += 1
                window_images += real_images.shape[0] * world_size
            terms = loss.generator_step(generator_ddp, discriminator_ddp, optimizer_g, batch_size,
                                        instance_noise_std=noise_std)
        window.add(terms)
        ema.update(generator, step=progress.step)
        progress.step = step
        if 0 < train.inject_nonfinite_at_step <= step:
            window.add({"d_loss": float("nan")})

        if not all_ranks_finite(window.last_finite(), world_size, device):
            if artifacts_writer:
                artifacts_writer.write_status("non-finite", step, "a loss became NaN or infinite at step "
                                              f"{step}; the last good checkpoint is kept and no FID is reported")
            ray.train.report({"step": step, "nonfinite": 1.0, "images_seen": progress.images_seen(experiment)})
            return

        final = step == train.steps
        evaluate = final or (train.eval_every and step % train.eval_every == 0)
        save = final or step % train.checkpoint_every == 0
        sample = final or step % train.sample_every == 0
        if not (final or evaluate or save or sample or step % train.report_every == 0):
            continue

        seconds = time.perf_counter() - window_started
        metrics = {
            "step": step,
            "images_seen": progress.images_seen(experiment),
            "epoch": progress.real_batches // batches_per_epoch,
            "images_per_second": window_images / max(seconds, 1e-9),
            "data_wait_fraction": data_seconds / max(seconds, 1e-9),
            "nonfinite": 0.0,
            **window.mean_across_ranks(world_size, device),
            # Per rank, not averaged: equal on every rank while DDP keeps the replicas in step.
            "generator_checksum": parameter_checksum(generator),
            "discriminator_checksum": parameter_checksum(discriminator),
        }
        window, window_images, data_seconds = MetricWindow(), 0, 0.0
        checkpoint_to_report = None
        if artifacts_writer:
            if sample:
                artifacts_writer.write_sample_grid(ema.module, step)
            if evaluate:
                metrics.update(artifacts_writer.evaluate(ema.module))
            progress.history.append({k: float(v) for k, v in metrics.items()})
            artifacts_writer.log_progress(metrics, train.steps)
            artifacts_writer.write_tensorboard(metrics)
        # The score Ray keeps the best checkpoints by; a checkpoint without a fresh FID ranks last.
        metrics["checkpoint_fid"] = metrics.get("fid", math.inf)
        with tempfile.TemporaryDirectory() as folder:
            if save and rank == 0:
                state = {
                    "format_version": FORMAT_VERSION,
                    "step": step,
                    "real_batches": progress.real_batches,
                    "images_seen": progress.images_seen(experiment),
                    "config": experiment.to_dict(),
                    "classes": list(run.classes),
                    "dataset_hash": run.dataset_hash,
                    "generator": generator.state_dict(),
                    "discriminator": discriminator.state_dict(),
                    "generator_ema": ema.module.state_dict(),
                    "optimizer_generator": optimizer_g.state_dict(),
                    "optimizer_discriminator": optimizer_d.state_dict(),
                    "scaler": None,  # bf16 autocast needs no gradient scaler
                    "rng": {"ranks": gather_rng_states(world_size)},
                    "history": progress.history,
                }
                with open(os.path.join(folder, FILE_NAME), "wb") as handle:
                    handle.write(checkpoint_bytes(state))
                checkpoint_to_report = ray.train.Checkpoint.from_directory(folder)
            elif save:
                gather_rng_states(world_size)  # rank 0 collects every rank's state
            ray.train.report(metrics, checkpoint=checkpoint_to_report)
        window_started = time.perf_counter()  # images/s measures training, not evaluation or saving
        if final and artifacts_writer:  # only once the final checkpoint is stored
            artifacts_writer.write_summary(progress.history)
            artifacts_writer.write_status("completed", step, f"trained {step} steps")


@dataclass
class Progress:
    step: int = 0  # generator steps done
    real_batches: int = 0  # per-worker real batches consumed by D steps
    history: list[dict[str, float]] = field(default_factory=list)

    def images_seen(self, experiment: ExperimentConfig) -> int:
        """Real images shown to D, over all workers."""
        return self.real_batches * experiment.train.batch_size


def real_batches(shard: InMemoryImages, batch_size: int, seed: int, start: int = 0):
    """Endless (images, labels) batches; batch k is the same whatever run reaches it, so a resumed run
    continues with exactly the data the uninterrupted run would have seen."""
    per_epoch = len(shard) // batch_size
    epoch, first = divmod(start, per_epoch)
    while True:
        order = torch.randperm(len(shard), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for position in range(first, per_epoch):
            chosen = order[position * batch_size:(position + 1) * batch_size].to(shard.images.device)
            yield shard.batch(chosen)
        epoch, first = epoch + 1, 0


class MetricWindow:
    """Loss terms of the steps since the last report; their means are reported."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._last_finite = True

    def add(self, terms: dict[str, float]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
            if not math.isfinite(value):
                self._last_finite = False

    def last_finite(self) -> bool:
        return self._last_finite

    def mean_across_ranks(self, world_size: int, device: torch.device) -> dict[str, float]:
        keys = sorted(self.sums)
        means = torch.tensor([self.sums[k] / self.counts[k] for k in keys], dtype=torch.float64, device=device)
        if world_size > 1:
            dist.all_reduce(means)
            means /= world_size
        return dict(zip(keys, means.tolist()))


def parameter_checksum(module: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(parameter.double().sum() for parameter in module.parameters()))


def all_ranks_finite(finite: bool, world_size: int, device: torch.device) -> bool:
    """True only when every rank's losses are finite, so all ranks stop at the same step."""
    if world_size == 1:
        return finite
    flag = torch.tensor([1.0 if finite else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gather_rng_states(world_size: int) -> list[dict[str, Any]]:
    """Every rank's random state, in rank order (a collective: all ranks call it)."""
    state = rng_state()
    if world_size == 1:
        return [state]
    states: list[Any] = [None] * world_size
    dist.all_gather_object(states, state)
    return states


class RunArtifacts:
    """Rank 0's view of the run folder: samples, evaluation, TensorBoard, plot, GIF and status."""

    def __init__(self, run: RunContext, experiment: ExperimentConfig, device: torch.device):
        self.run = run
        self.experiment = experiment
        self.folder = location(run.run_uri)
        self.device = device
        self.evaluator = Evaluator(experiment, run.classes, run.dataset_hash, run.class_frequencies,
                                   run.inception_weights, device)
        model = experiment.gan.model
        self.samples = artifacts.FixedSamples(model.latent_size, run.classes if model.conditional else None,
                                              experiment.train.seed)
        from tensorboardX import SummaryWriter

        self.tensorboard_folder = tempfile.mkdtemp(prefix="pokegan-tensorboard-")
        self.tensorboard = SummaryWriter(self.tensorboard_folder)
        self.last_fid: float | None = None

    def write_sample_grid(self, generator: torch.nn.Module, step: int) -> None:
        grid = self.samples.grid(generator, self.device)
        self.folder.join("samples", f"step-{step:07d}.png").write_bytes_atomic(artifacts.png_bytes(grid))

    def evaluate(self, generator: torch.nn.Module) -> dict[str, float]:
        scores = self.evaluator.evaluate(generator)
        self.last_fid = scores["fid"]
        return scores

    def log_progress(self, metrics: dict[str, float], total_steps: int) -> None:
        fid = f" | FID {self.last_fid:.1f} (N={self.experiment.train.eval_images})" if self.last_fid is not None \
            else ""
        # Straight to stdout: Ray Train's patched print() would log the line twice.
        sys.stdout.write(f"[pokegan] step {metrics['step']}/{total_steps} | images {metrics['images_seen']:,} | "
                         f"epoch {metrics['epoch']} | D {metrics.get('d_loss', float('nan')):.3f} "
                         f"G {metrics.get('g_loss', float('nan')):.3f} | D acc real "
                         f"{metrics.get('d_accuracy_real', 0):.2f} fake {metrics.get('d_accuracy_fake', 0):.2f} | "
                         f"{metrics['images_per_second']:.0f} img/s{fid}\n")
        sys.stdout.flush()

    def write_tensorboard(self, metrics: dict[str, float]) -> None:
        """Scalars over images seen; the local event file is copied to the run folder after each report."""
        for key, value in metrics.items():
            if key != "step":
                self.tensorboard.add_scalar(key, value, global_step=int(metrics["images_seen"]))
        self.tensorboard.flush()
        for name in os.listdir(self.tensorboard_folder):
            with open(os.path.join(self.tensorboard_folder, name), "rb") as handle:
                self.folder.join("tensorboard", name).write_bytes_atomic(handle.read())

    def write_summary(self, history: list[dict[str, float]]) -> None:
        """At the end: the progress GIF of every sample grid so far, the loss/FID plot, the metric history."""
        grids = [info.path for info in self.folder.join("samples").list_files() if info.path.endswith(".png")]
        frames = [self.folder.filesystem.open_input_stream(path).read() for path in grids]
        self.folder.join("progress.gif").write_bytes_atomic(artifacts.progress_gif(frames))
        title = f"{self.experiment.gan.loss.name} / {self.experiment.gan.model.upsampler}"
        self.folder.join("history.png").write_bytes_atomic(artifacts.history_plot(history, title))
        self.folder.join("history.json").write_bytes_atomic(json.dumps(history, indent=1).encode())

    def write_status(self, status: str, step: int, message: str) -> None:
        record = {"status": status, "step": step, "message": message, "last_fid": self.last_fid}
        self.folder.join(STATUS_FILE).write_bytes_atomic(json.dumps(record, indent=2).encode())
