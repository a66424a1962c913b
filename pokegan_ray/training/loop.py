"""The training loop: one function that every Ray Train worker (or a single-worker search trial) runs.

Read `run_training` top to bottom: build the networks, take this worker's data into memory,
restore from the latest checkpoint, then the steps (`train_step`: the loss's critic steps, one
generator step, EMA), and every `report_every` steps a `report` to Ray, which may carry a
checkpoint, an FID, a sample grid. The losses own the maths; this loop owns only the schedule.
Rank 0 writes the run's artifacts. How it reaches Ray is the session's business
(`pokegan_ray.training.session`).
"""

from __future__ import annotations

import json
import logging
import math
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

from pokegan_ray import ray_compat, report as run_report
from pokegan_ray.cluster import DEFAULT_WAIT_TIMEOUT_S
from pokegan_ray.data.reader import InMemoryImages
from pokegan_ray.losses import build_loss, build_optimizers
from pokegan_ray.losses.schedules import learning_rates, set_learning_rate
from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.models import GeneratorEma, build_networks
from pokegan_ray.storage import location
from pokegan_ray.training import artifacts
from pokegan_ray.training.checkpoint import FILE_NAME, FORMAT_VERSION, load_checkpoint, read_generator_weights, \
    restore_rng_state, rng_state
from pokegan_ray.training.config import ExperimentConfig
from pokegan_ray.training.evaluation import Evaluator
from pokegan_ray.training.session import RayTrainSession, Session

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.json"  # the latest report (RunArtifacts.write_progress)


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
    # A PBT trial: the checkpoint its search's ledger says it continues from (a copy of another trial's, after
    # an exploitation; else its own latest), and how many copies of other trials' checkpoints the run has
    # taken. Checkpoints carry that count (`lineage`): the run's latest checkpoint is used only when written
    # after the latest copy. Tune's own pointer may be stale: an interrupted search restores a trial that
    # had just been handed a copy with its own older checkpoint, or with none.
    continue_from_uri: str | None = None
    handoffs: int = 0
    # A worker whose data shard has not arrived after this long gives up (the cluster's wait timeout).
    data_wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`."""
    ray_compat.quiet_train_loggers()
    experiment = ExperimentConfig.from_dict(loop_config["experiment"])
    run = RunContext(**loop_config["run"])
    run_training(experiment, run, RayTrainSession(experiment, run.data_wait_timeout_s))


def run_training(experiment: ExperimentConfig, run: RunContext, session: Session) -> None:
    """Train until `train.steps` (or `train.images`), reporting to Ray through `session`; the run's status file
    says how it ended."""
    train = experiment.train
    if experiment.scale.threads_per_worker:
        torch.set_num_threads(experiment.scale.threads_per_worker)
    gan = build_gan(experiment, session.device)
    torch.manual_seed(train.seed * 1_000 + session.rank)  # per-rank randomness from here on

    shard = session.load_shard()
    if not session.all_true(shard is not None):
        if session.rank == 0:
            write_status(run.run_uri, "failed", 0, f"the training data did not arrive within "
                         f"{run.data_wait_timeout_s:.0f} s: Ray Data's read tasks waited for CPUs that other work "
                         "holds (see `ray status`)")
        return
    batch_size = experiment.batch_per_worker
    if len(shard) // batch_size == 0:
        raise ValueError(f"worker {session.rank} holds {len(shard)} images, fewer than its batch of {batch_size}: "
                         "lower train.batch_size or scale.workers")
    progress = restore(gan, session, run, experiment)
    gan.wrap_for_ddp(session)

    writer = RunArtifacts(run, experiment, session.device) if session.rank == 0 else None
    evaluator = Evaluator(experiment, run.classes, run.dataset_hash, run.class_frequencies, run.inception_weights,
                          session.device)
    batches = real_batches(shard, batch_size, train.seed * 1_000 + session.rank, start=progress.real_batches)
    window = MetricWindow(session, len(shard) // batch_size, first_step=progress.step + 1)
    clock = progress.clock(experiment)
    while not train.finished(clock):
        train_step(gan, experiment, progress, batches, window, session)
        progress.first_step_at = progress.first_step_at or time.time()
        before, clock = clock, progress.clock(experiment)
        if train.report_due(before, clock):
            if not report(gan, experiment, run, progress, before, window, writer, evaluator, session):
                return
            window = MetricWindow(session, len(shard) // batch_size, first_step=progress.step + 1)
    if writer:  # only once the final checkpoint is stored
        writer.write_summary(progress.history)
        writer.write_status("completed", progress.step, f"trained {progress.step} steps")


@dataclass
class Gan:
    """The networks, their EMA, optimisers and loss of one worker (plus DDP wrappers once wrapped)."""

    generator: torch.nn.Module
    discriminator: torch.nn.Module
    ema: GeneratorEma
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    loss: Any
    device: torch.device
    memory_format: torch.memory_format
    generator_ddp: torch.nn.Module | None = None
    discriminator_ddp: torch.nn.Module | None = None

    def wrap_for_ddp(self, session: Session) -> None:
        """G and D wrapped separately (one optimiser step each); a single worker uses them as they are."""
        if session.world_size == 1:
            self.generator_ddp, self.discriminator_ddp = self.generator, self.discriminator
            return
        # BatchNorm buffers stay per rank (broadcast_buffers=False): D runs twice before backward,
        # and SyncBatchNorm does not run on CPU. Never static_graph: it breaks the gradient penalty.
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        with warnings.catch_warnings():
            # torch suggests forward_sync_buffers, which still syncs at init; rank-local buffers are what we want.
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            self.generator_ddp = DistributedDataParallel(self.generator, device_ids=device_ids,
                                                         broadcast_buffers=False)
            self.discriminator_ddp = DistributedDataParallel(self.discriminator, device_ids=device_ids,
                                                             broadcast_buffers=False)


def build_gan(experiment: ExperimentConfig, device: torch.device) -> Gan:
    """Identical initial weights on every rank (DDP would broadcast rank 0's anyway)."""
    torch.manual_seed(experiment.train.seed)
    generator, discriminator = build_networks(experiment.gan.model)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    generator.to(device, memory_format=memory_format)
    discriminator.to(device, memory_format=memory_format)
    ema = GeneratorEma(generator, decay=experiment.gan.loss.ema_decay)
    optimizer_g, optimizer_d = build_optimizers(generator, discriminator, experiment.gan.loss)
    return Gan(generator, discriminator, ema, optimizer_g, optimizer_d, build_loss(experiment.gan, device), device,
               memory_format)


def restore(gan: Gan, session: Session, run: RunContext, experiment: ExperimentConfig) -> "Progress":
    """Continue from the session's latest checkpoint, else start fresh (or warm, from an earlier generator).
    A PBT trial continues from the checkpoint its search names unless its latest was written after the
    latest copy of another trial's checkpoint it took."""
    latest = session.latest_checkpoint()
    state = load_checkpoint(*latest, map_location=gan.device) if latest else None
    if run.continue_from_uri and (state is None or not continues_lineage(state, run)):
        latest = location(run.continue_from_uri).join(FILE_NAME).read_bytes(), f"checkpoint {run.continue_from_uri}"
        state = load_checkpoint(*latest, map_location=gan.device)
    if state is None:
        if run.warm_start_uri:  # only a fresh start: a restart after a failure continues from its own checkpoint
            weights = read_generator_weights(run.warm_start_uri, map_location=gan.device)
            gan.generator.load_state_dict(weights)
            gan.ema.module.load_state_dict(weights)
        return Progress()
    source = latest[1]
    gan.generator.load_state_dict(state["generator"])
    gan.discriminator.load_state_dict(state["discriminator"])
    gan.ema.module.load_state_dict(state["generator_ema"])
    load_optimizer_state(gan.optimizer_g, state["optimizer_generator"])
    load_optimizer_state(gan.optimizer_d, state["optimizer_discriminator"])
    progress = Progress(step=state["step"], real_batches=state["real_batches"], history=state["history"],
                        resumed_from_step=state["step"], resumed_checksum=parameter_checksum(gan.generator))
    ranks = state["rng"]["ranks"]
    loss_states = state.get("loss_states") or []  # absent in checkpoints from before the losses had state
    if loss_states:
        gan.loss.load_state_dict(loss_states[session.rank if len(loss_states) == session.world_size else 0])
    if len(ranks) == session.world_size:
        restore_rng_state(ranks[session.rank])
    else:  # another worker count: exact continuation is impossible, keep it reproducible at least
        torch.manual_seed(experiment.train.seed * 1_000 + session.rank + 7_919 * progress.step)
    if session.rank == 0:
        sys.stdout.write(f"[pokegan] continuing from the checkpoint at step {progress.step} ({source})\n")
        sys.stdout.flush()
    return progress


def continues_lineage(state: dict[str, Any], run: RunContext) -> bool:
    """Whether a checkpoint was written by this run after the latest copy of another trial's checkpoint it
    took (not before it, and not by the trial it was copied from)."""
    lineage = state.get("lineage") or {}
    return lineage.get("run_uri") == run.run_uri and lineage.get("handoffs", 0) == run.handoffs


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """A checkpoint's optimiser state (moments, step counts) under this config's hyperparameters: a PBT trial
    that continues from another trial's checkpoint keeps its own (perturbed) betas. For a run resuming its
    own checkpoint the betas are the same values, and the rates are set again before every step anyway."""
    configured = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, configured):
        group.update(settings)


def train_step(gan: Gan, experiment: ExperimentConfig, progress: "Progress", batches, window: "MetricWindow",
               session: Session) -> None:
    """The loss's critic steps on real batches, one generator step, the EMA update; nothing here waits
    for the device (the loss terms stay there until the next report)."""
    loss, train = gan.loss, experiment.train
    step = progress.step + 1
    epoch = progress.real_batches // window.batches_per_epoch
    rate_g, rate_d = learning_rates(experiment.gan.loss, progress.step, experiment.total_steps, epoch)
    set_learning_rate(gan.optimizer_g, rate_g)
    set_learning_rate(gan.optimizer_d, rate_d)
    noise_std = experiment.gan.loss.instance_noise_std * max(0.0, 1.0 - step / experiment.total_steps)
    use_bf16 = gan.device.type == "cuda" and train.mixed_precision
    with torch.autocast(device_type=gan.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        for _ in range(loss.critic_steps(progress.step)):
            waited = time.perf_counter()
            real_images, real_labels = next(batches)
            window.data_seconds += time.perf_counter() - waited
            if gan.device.type == "cuda":
                real_images = real_images.contiguous(memory_format=gan.memory_format)
            window.add(loss.discriminator_step(gan.generator_ddp, gan.discriminator_ddp, gan.optimizer_d, real_images,
                                               real_labels if loss.num_classes else None,
                                               instance_noise_std=noise_std))
            progress.real_batches += 1
            window.images += real_images.shape[0] * session.world_size
        terms = loss.generator_step(gan.generator_ddp, gan.discriminator_ddp, gan.optimizer_g,
                                    experiment.batch_per_worker, instance_noise_std=noise_std)
    window.add(terms)
    gan.ema.update(gan.generator, step=progress.step)
    progress.step = step


def report(gan: Gan, experiment: ExperimentConfig, run: RunContext, progress: "Progress", before: int,
           window: "MetricWindow", writer: "RunArtifacts | None", evaluator: Evaluator, session: Session) -> bool:
    """Metrics to Ray; FID when one is due (every rank extracts its share); on rank 0 also samples and
    the artifacts; a complete checkpoint when one is due. `before`: the run's clock (train.unit) before
    the step just taken, so a cadence is due when the step crossed its mark.

    False when a loss or a weight has become NaN or infinite since the last report: the run then ends
    with the status `non-finite` and its last checkpoint is the last good one. Finiteness is checked
    here, not every step, so a NaN costs at most `train.report_every` steps of compute.
    """
    train, step, after = experiment.train, progress.step, progress.clock(experiment)
    seconds = time.perf_counter() - window.started
    losses = window.mean_across_ranks()  # the one device-to-host copy of the window's loss terms
    checksums = {"generator_checksum": parameter_checksum(gan.generator),
                 "discriminator_checksum": parameter_checksum(gan.discriminator)}
    # A collective, so every rank takes the same way out (one rank leaving alone would hang the others).
    if not session.all_true(all(math.isfinite(value) for value in (*losses.values(), *checksums.values()))):
        stop_non_finite(experiment, progress, window, writer, session)
        return False
    metrics = {
        "step": step,
        "images_seen": progress.images_seen(experiment),
        "epoch": progress.real_batches // window.batches_per_epoch,
        "images_per_second": window.images / max(seconds, 1e-9),
        "data_wait_fraction": window.data_seconds / max(seconds, 1e-9),
        "nonfinite": 0.0,
        "resumed_from_step": float(progress.resumed_from_step),
        # The generator's checksum as loaded from that checkpoint (0: a fresh start): PBT's copies are checkable.
        "resumed_generator_checksum": progress.resumed_checksum,
        # How many PBT copies of other trials' checkpoints this run had taken when it reported this.
        "handoffs": float(run.handoffs),
        # Wall-clock time (Unix seconds) this process finished its first step: start-up cost, seen from outside.
        "first_step_at": progress.first_step_at,
        **losses,
        # Per rank, not averaged: equal on every rank while DDP keeps the replicas in step.
        **checksums,
    }
    if train.evaluation_due(before, after):  # a collective: every rank takes part, rank 0 gets the scores
        metrics.update(evaluator.evaluate(gan.ema.module, rank=session.rank, world_size=session.world_size))
    if writer:
        sampled = train.sample_due(before, after)
        if sampled:
            writer.write_sample_grid(gan.ema.module, step)
        if "fid" in metrics:
            writer.last_fid = metrics["fid"]
        # Each score's best and last value so far, from the run's history, so they survive a restart.
        for signal in SIGNALS:
            values = [entry[signal] for entry in progress.history if signal in entry] + [metrics.get(signal, math.inf)]
            finite = [value for value in values if math.isfinite(value)]
            if finite:
                metrics[f"best_{signal}"], metrics[f"last_{signal}"] = min(finite), finite[-1]
        progress.history.append({k: float(v) for k, v in metrics.items()})
        writer.write_progress(metrics, experiment.total_steps)
        writer.write_tensorboard(metrics)
        if sampled or "fid" in metrics:
            writer.write_report(progress.history)
    # The score Ray keeps the best checkpoints by; a checkpoint without a fresh FID ranks last.
    metrics["checkpoint_fid"] = metrics.get("fid", math.inf)
    state = None
    if train.checkpoint_due(before, after):
        rank_states = gather_rank_states(gan, session)  # a collective: every rank takes part
        if session.rank == 0:
            state = checkpoint_state(gan, experiment, run, progress, rank_states)
    session.report(metrics, state)
    return True


def stop_non_finite(experiment: ExperimentConfig, progress: "Progress", window: "MetricWindow",
                    writer: "RunArtifacts | None", session: Session) -> None:
    step = progress.step
    if writer:
        writer.write_status("non-finite", step, f"a loss or weight became NaN or infinite between steps "
                            f"{window.first_step} and {step}; the last good checkpoint is kept and no FID is reported")
    session.report({"step": step, "nonfinite": 1.0, "images_seen": progress.images_seen(experiment)}, None)


def checkpoint_state(gan: Gan, experiment: ExperimentConfig, run: RunContext, progress: "Progress",
                     rank_states: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything needed to continue the run exactly; tensors and plain values only."""
    return {
        "format_version": FORMAT_VERSION,
        "step": progress.step,
        "real_batches": progress.real_batches,
        "images_seen": progress.images_seen(experiment),
        "config": experiment.to_dict(),
        "classes": list(run.classes),
        "dataset_hash": run.dataset_hash,
        "generator": gan.generator.state_dict(),
        "discriminator": gan.discriminator.state_dict(),
        "generator_ema": gan.ema.module.state_dict(),
        "optimizer_generator": gan.optimizer_g.state_dict(),
        "optimizer_discriminator": gan.optimizer_d.state_dict(),
        "scaler": None,  # bf16 autocast needs no gradient scaler
        "rng": {"ranks": [state["rng"] for state in rank_states]},
        # Each rank's loss state: its D-step count (lazy R1) and adaptive augmentation probability.
        "loss_states": [state["loss"] for state in rank_states],
        "history": progress.history,
        "lineage": {"run_uri": run.run_uri, "handoffs": run.handoffs},
    }


@dataclass
class Progress:
    step: int = 0  # generator steps done
    real_batches: int = 0  # per-worker real batches consumed by D steps
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int = 0  # the checkpoint this process continued from (0: a fresh start)
    resumed_checksum: float = 0.0  # parameter_checksum of the generator loaded from it
    first_step_at: float = 0.0  # Unix time this process finished its first step

    def images_seen(self, experiment: ExperimentConfig) -> int:
        """Real images shown to D, over all workers."""
        return self.real_batches * experiment.train.batch_size

    def clock(self, experiment: ExperimentConfig) -> int:
        """How far the run is in its own unit (`train.unit`): generator steps or real images seen."""
        return experiment.train.clock(self.step, self.images_seen(experiment))


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
    """Loss terms, images and data-wait time of the steps since the last report; their means are reported.

    The loss terms are summed on the device as they come; `mean_across_ranks` copies them to the host
    once, at the report.
    """

    def __init__(self, session: Session, batches_per_epoch: int, first_step: int = 0):
        self.session = session
        self.batches_per_epoch = batches_per_epoch
        self.first_step = first_step  # the first generator step this window covers
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.started = time.perf_counter()
        self.images = 0
        self.data_seconds = 0.0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def mean_across_ranks(self) -> dict[str, float]:
        """Means over the window and over ranks; NaN or infinity anywhere stays in the result."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        means = torch.stack([self.sums[k].double() / self.counts[k] for k in keys])
        if self.session.world_size > 1:
            dist.all_reduce(means)
            means /= self.session.world_size
        return dict(zip(keys, means.tolist()))


def parameter_checksum(module: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(parameter.double().sum() for parameter in module.parameters()))


def gather_rank_states(gan: Gan, session: Session) -> list[dict[str, Any]]:
    """Every rank's random state and loss state, in rank order (a collective: all ranks call it)."""
    state = {"rng": rng_state(), "loss": gan.loss.state_dict()}
    if session.world_size == 1:
        return [state]
    states: list[Any] = [None] * session.world_size
    dist.all_gather_object(states, state)
    return states


def write_status(run_uri: str, status: str, step: int, message: str, last_fid: float | None = None) -> None:
    """`status.json`: how the run ended (completed, non-finite or failed), for the driver and for people."""
    record = {"status": status, "step": step, "message": message, "last_fid": last_fid}
    location(run_uri).join(STATUS_FILE).write_bytes_atomic(json.dumps(record, indent=2).encode())


class RunArtifacts:
    """Rank 0's view of the run folder: samples, TensorBoard, plot, GIF, status and report.html."""

    def __init__(self, run: RunContext, experiment: ExperimentConfig, device: torch.device):
        self.run = run
        self.experiment = experiment
        self.folder = location(run.run_uri)
        self.device = device
        model = experiment.gan.model
        self.samples = artifacts.FixedSamples(model.latent_size, run.classes if model.conditional else None,
                                              experiment.train.seed)
        from tensorboardX import SummaryWriter

        self.tensorboard_folder = tempfile.mkdtemp(prefix="pokegan-tensorboard-")
        self.tensorboard = SummaryWriter(self.tensorboard_folder)
        self.last_fid: float | None = None
        self.history: list[dict[str, float]] = []  # the run's, as of the latest report
        self.thumbnails = run_report.Thumbnails()  # the report's grids, each encoded once

    def write_sample_grid(self, generator: torch.nn.Module, step: int) -> None:
        grid = self.samples.grid(generator, self.device)
        target = self.folder.join(run_report.SAMPLES_FOLDER, f"step-{step:07d}.png")
        target.write_bytes_atomic(artifacts.png_bytes(grid))
        self.thumbnails.of_image(target, grid)  # in memory now: the report need not read it back

    def write_report(self, history: list[dict[str, float]], status: str = "running", reason: str = "") -> None:
        """report.html: the run's FID over images seen, its grids, how it ended; rewritten at each grid and
        evaluation, so it can be opened while the run goes. A page that cannot be written is only a warning."""
        self.history = history
        try:
            page = run_report.run_page(self.experiment, self.folder, history, status, reason, self.thumbnails)
            run_report.write_page(self.folder.join(run_report.REPORT_FILE), page)
        except Exception as error:  # any: the page is a view of the run, never a reason to end it
            log.warning("could not write the run report in %s: %s", self.folder.uri, error)

    def write_progress(self, metrics: dict[str, float], total_steps: int) -> None:
        """`progress.json`: this report, for whoever shows the run's progress (the driver of `pokegan train`, a
        search's live view); it reads the run folder, so it works wherever the run runs and the folder lies."""
        keys = ("step", "images_seen", "epoch", "images_per_second", "d_loss", "g_loss", "d_accuracy_real",
                "d_accuracy_fake")
        report = {key: metrics[key] for key in keys if key in metrics}
        report.update(total_steps=total_steps, last_fid=self.last_fid, eval_images=self.experiment.train.eval_images,
                      time=time.time())
        self.folder.join(PROGRESS_FILE).write_bytes_atomic(json.dumps(report).encode())

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
        samples = self.folder.join(run_report.SAMPLES_FOLDER)
        grids = [info.path for info in samples.list_files() if info.path.endswith(".png")]
        frames = [self.folder.filesystem.open_input_stream(path).read() for path in grids]
        self.folder.join("progress.gif").write_bytes_atomic(artifacts.progress_gif(frames))
        model = self.experiment.gan.model
        title = f"{model.architecture} / {self.experiment.gan.loss.name} / {model.upsampler} / {model.resolution_px} px"
        self.folder.join("history.png").write_bytes_atomic(artifacts.history_plot(history, title))
        self.folder.join("history.json").write_bytes_atomic(json.dumps(history, indent=1).encode())

    def write_status(self, status: str, step: int, message: str) -> None:
        write_status(self.run.run_uri, status, step, message, self.last_fid)
        self.write_report(self.history, status, "" if status == "completed" else message)
