"""The `pokegan` command. The only module that reads the environment or starts Ray.

Each subcommand is one function `run_<name>(args)`; heavy imports (torch, Ray) happen
inside them so `pokegan --help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys

log = logging.getLogger("pokegan_ray")

from pokegan_ray.defaults import DEFAULT_DATA_URI as DEFAULT_DATA, DEFAULT_RUNS_URI as DEFAULT_RUNS, \
    DEFAULT_SEARCHES_URI as DEFAULT_SEARCHES, DEFAULT_WAIT_TIMEOUT_S
from pokegan_ray.tracking import INSTALL_HINT, RETRAIN_EXPERIMENT, SEARCH_EXPERIMENT_PREFIX, TRAIN_EXPERIMENT, \
    train_tracking


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit status 2."""


# sysexits' EX_TEMPFAIL: "try again later", so a cron wrapper can tell "another retrain is running"
# from a failure.
EXIT_LOCKED = 75


def _resolutions(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated pixel sizes like 64,128; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pokegan", description="Train GANs that invent new Pokémon, distributed on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log debug details (every skipped file)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare", help="build the augmented data set once, into Parquet shards in an object store",
        description="Decode, flatten onto white, pad to square, augment and resize the source images with a "
                    "Ray Data job, and write Parquet shards plus manifest.json (written last) to DEST. "
                    "Re-running with the same inputs and options changes nothing.")
    prepare.add_argument("--source", default="bundled",
                         help="'bundled' (the pokemon package's 1008 images and types; default), a local folder "
                              "(searched recursively) or s3://bucket/prefix")
    prepare.add_argument("--dest", default=DEFAULT_DATA,
                         help=f"where the set goes: a local path, file:///path or s3://bucket/prefix "
                              f"(default: {DEFAULT_DATA})")
    prepare.add_argument("--resolutions", type=_resolutions, default=(64, 128),
                         help="comma-separated square sizes in pixels (default: 64,128)")
    prepare.add_argument("--augment", type=int, default=10,
                         help="extra augmented versions per image: flips, small rotations and shifts, colour "
                              "jitter (default: 10)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the augmentations (default: 0)")
    prepare.add_argument("--min-size", type=int, default=24, dest="min_size",
                         help="skip images whose shorter side is below this many pixels (default: 24)")
    prepare.add_argument("--limit", type=int, default=None,
                         help="use only the first N source images (for a quick trial)")
    _add_cluster_arguments(prepare)
    prepare.set_defaults(handler=run_prepare)

    train = commands.add_parser(
        "train", help="train a GAN from the zoo with Ray Train (DDP across workers)",
        description="Train on the prepared set with a Ray TorchTrainer: DDP workers, FID/KID on the EMA generator "
                    "as it goes, complete checkpoints in the storage, and restarts from the last checkpoint when a "
                    "worker dies. Without --data the bundled set is prepared on first use.")
    train.add_argument("--config", help="a YAML file with sections data, model, loss, train, scale")
    train.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting, e.g. --set loss.name=wgan-gp (repeatable)")
    train.add_argument("--data", help=f"the prepared set (default: {DEFAULT_DATA}, prepared if absent)")
    train.add_argument("--storage", default=DEFAULT_RUNS,
                       help=f"where runs go: a local path or s3://bucket/prefix (default: {DEFAULT_RUNS})")
    train.add_argument("--name", help="the run's name (default: the time and what differs from the defaults)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run called --name from its last checkpoint, with its saved config")
    train.add_argument("--workers", type=int, help="Ray Train workers (default: 2)")
    train.add_argument("--gpu", action="store_true", help="GPU workers (scale.gpus_per_worker each, default 1), bf16 "
                                                          "autocast and channels_last")
    _add_mlflow_argument(train, "the run", TRAIN_EXPERIMENT)
    _add_cluster_arguments(train)
    train.set_defaults(handler=run_train)

    tune = commands.add_parser(
        "tune", help="search hyperparameters: Ray Tune + Optuna (TPE), stopping poor trials early on FID",
        description="Run many training trials on the Ray cluster: Optuna proposes configs from the space, ASHA "
                    "stops trials whose FID is poor, and the search ends with a leaderboard, the best config (a "
                    "YAML for pokegan train --config), the best checkpoint and a grid of its Pokémon. Without "
                    "--data the bundled set is prepared on first use.")
    tune.add_argument("--space", help="a search space YAML, e.g. search_spaces/quick.yaml (not needed with --resume)")
    tune.add_argument("--samples", type=int, help="number of trials (default: the space's search.samples)")
    tune.add_argument("--concurrent", type=int, help="trials at once (default: the space's search.concurrent; "
                                                     "capped by the cluster's CPUs)")
    tune.add_argument("--data", help=f"the prepared set (default: {DEFAULT_DATA}, prepared if absent)")
    tune.add_argument("--storage", default=DEFAULT_SEARCHES,
                      help=f"where searches go: a local path or s3://bucket/prefix (default: {DEFAULT_SEARCHES})")
    tune.add_argument("--name", help="the search's name (default: the space's name and the time)")
    tune.add_argument("--resume", action="store_true",
                      help="continue the interrupted search --name: finished trials are kept, not rerun")
    tune.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override one setting of the space's base for every trial (repeatable)")
    _add_mlflow_argument(tune, "each trial (one MLflow run each)", SEARCH_EXPERIMENT_PREFIX + "NAME")
    _add_cluster_arguments(tune)
    tune.set_defaults(handler=run_tune)

    evaluate = commands.add_parser(
        "evaluate", help="print FID and KID of a saved generator (its EMA) against a prepared set",
        description="Generate N images with the checkpoint's EMA generator and compare their Inception features "
                    "with the real originals' (cached next to the data set after the first time). Set "
                    "POKEGAN_INCEPTION_WEIGHTS to use another copy of the FID Inception weights.")
    evaluate.add_argument("--checkpoint", required=True,
                          help="a checkpoint.pt, or the Ray checkpoint folder holding it (local or s3://)")
    evaluate.add_argument("--data", help="the prepared set to compare with (default: the one it was trained on)")
    evaluate.add_argument("--images", type=int, default=None,
                          help="generated images N (default: as many as the set has originals); FIDs at "
                               "different N are not comparable")
    evaluate.add_argument("--device", type=_device, default="cuda" if _has_cuda() else "cpu", help="cpu or cuda")
    evaluate.set_defaults(handler=run_evaluate)

    retrain = commands.add_parser(
        "retrain", help="the nightly job: refresh the data, train a candidate, promote it if it beats the champion",
        description="Take the registry's lock, refresh the prepared set if its source changed, train a candidate "
                    "from the champion's config (plus --config/--set), score candidate and champion on the same "
                    "real statistics, N and seed, and promote the candidate only if its FID < champion FID - "
                    "margin. Prints one summary line. Exit status: 0 promoted or kept, 1 failed (the champion "
                    f"is untouched), 2 bad usage, {EXIT_LOCKED} another retrain holds the lock.")
    retrain.add_argument("--registry", required=True, help="the model registry: a local path or s3://bucket/prefix")
    retrain.add_argument("--name", default="pokegan", help="the model's name in the registry (default: pokegan)")
    retrain.add_argument("--data", help="the prepared set (default: the champion's, else "
                                        f"{DEFAULT_DATA}, prepared from the bundled set if absent)")
    retrain.add_argument("--config", help="a YAML file applied over the champion's config (or the defaults)")
    retrain.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override one setting, e.g. --set train.steps=500 (repeatable)")
    retrain.add_argument("--margin", type=float, default=0.0,
                         help="FID points the candidate must beat the champion by (default: 0)")
    retrain.add_argument("--warm-start", action="store_true", dest="warm_start",
                         help="start the candidate's generator (and its EMA) from the champion's EMA generator; "
                              "the discriminator and both optimisers start fresh")
    retrain.add_argument("--storage", help="where the candidate's run goes (default: REGISTRY/runs)")
    retrain.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                         help="wait up to this long for another retrain's lock (default: 0, fail at once)")
    retrain.add_argument("--lock-ttl-hours", type=float, default=12.0, dest="lock_ttl_hours",
                         help="a lock older than this is taken to be a crashed run's and broken (default: 12)")
    retrain.add_argument("--device", type=_device, default="cuda" if _has_cuda() else "cpu",
                         help="where this process scores the two generators: cpu or cuda")
    _add_mlflow_argument(retrain, "the candidate's run and the decision (promoted, kept or failed)",
                         RETRAIN_EXPERIMENT)
    _add_cluster_arguments(retrain)
    retrain.set_defaults(handler=run_retrain)

    generate = commands.add_parser(
        "generate", help="new Pokémon from the registry's champion or a checkpoint: PNGs, a grid, a GIF",
        description="Write pokemon-000.png..., grid.png and generate.json (each image's type) into --out, and "
                    "with --interpolate interpolation.gif, a walk through the latent space between several "
                    "seeds. The same --seed gives the same images.")
    generate.add_argument("--model", default="champion",
                          help="'champion' (default), a registry version like v0003, or a checkpoint.pt / Ray "
                               "checkpoint folder (local or s3://)")
    generate.add_argument("--registry", help="the model registry, for --model champion or vNNNN")
    generate.add_argument("--name", default="pokegan", help="the model's name in the registry (default: pokegan)")
    generate.add_argument("--n", type=int, default=64, dest="count", help="how many images (default: 64)")
    generate.add_argument("--type", dest="type_name",
                          help="a Pokémon type for a conditional (AC-GAN) model; without it such a model cycles "
                               "through its types")
    generate.add_argument("--seed", type=int, default=0, help="seed of the latents (default: 0)")
    generate.add_argument("--out", default="generated", help="the output folder, local or s3:// (default: generated)")
    generate.add_argument("--interpolate", action="store_true", help="also write interpolation.gif")
    generate.add_argument("--device", type=_device, default="cuda" if _has_cuda() else "cpu", help="cpu or cuda")
    generate.set_defaults(handler=run_generate)
    return parser


def _add_mlflow_argument(command: argparse.ArgumentParser, what: str, experiment: str) -> None:
    command.add_argument("--mlflow", metavar="URI",
                         help=f"log {what} to the MLflow tracking server at URI (e.g. http://127.0.0.1:5000), in the "
                              f"experiment {experiment} or MLFLOW_EXPERIMENT_NAME: params, FID and the losses over "
                              "images seen, sample grids, the best checkpoint. Credentials come from MLflow's "
                              "variables (MLFLOW_TRACKING_USERNAME/_PASSWORD or MLFLOW_TRACKING_TOKEN), never "
                              f"the URI. Needs {INSTALL_HINT}")


def _add_cluster_arguments(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("running on a Ray cluster (RAY_ADDRESS)")
    group.add_argument("--cluster-timeout", type=_minutes, default=DEFAULT_WAIT_TIMEOUT_S / 60,
                       dest="cluster_timeout", metavar="MINUTES",
                       help="how long a job that does not fit the cluster yet waits for nodes (autoscaling, a "
                            "node that rejoins) before it fails (default: %(default)g)")
    group.add_argument("--shared-filesystem", action="store_true", dest="shared_filesystem",
                       help="local paths are on a file system every node mounts (NFS, EFS ...); without it a "
                            "cluster of several nodes needs s3:// for data and storage")


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes, like 15 or 0.5; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 minutes, got {text!r}")
    return value


def _has_cuda() -> bool:
    return os.path.exists("/dev/nvidia0")


def _device(text: str) -> str:
    """`--device`: cpu, cuda or cuda:N, and a GPU only where torch sees one (checked before anything loads)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: pokegan runs on cpu or cuda (cuda:N for one GPU)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise argparse.ArgumentTypeError(f"{text!r}: torch sees no CUDA GPU on this machine; use --device cpu")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    return text


def run_prepare(args: argparse.Namespace) -> int:
    from pokegan_ray.data.prepare import PrepareError, PrepareOptions, plan_prepare, prepare

    try:
        options = PrepareOptions(resolutions=args.resolutions, augment=args.augment, seed=args.seed,
                                 min_side_px=args.min_size, limit=args.limit)
        plan = plan_prepare(args.source, args.dest, options)  # a wrong --source or --dest fails before Ray
    except PrepareError as error:
        raise UsageError(str(error)) from None
    cluster = init_ray(args)
    # Ray Data reads the source and writes the shards on whichever node has room.
    _require_shared_storage({"--source": "" if args.source == "bundled" else args.source, "--dest": args.dest},
                            cluster)
    try:
        manifest = prepare(args.source, args.dest, options, cluster, plan=plan)
    except PrepareError as error:
        raise UsageError(str(error)) from None
    print(f"prepared {manifest['kept']} images -> {manifest['rows']} rows at {args.dest} "
          f"(content hash {manifest['content_hash'][:12]}, {len(manifest['skipped'])} skipped)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from pokegan_ray.training.config import load_raw_config, merge_sections
    from pokegan_ray.training.trainer import TrainError, check_before_ray, train

    try:
        raw = load_raw_config(args.config, args.assignments)
    except ValueError as error:
        raise UsageError(str(error)) from None
    overrides: dict = {}
    if args.data:
        overrides["data"] = {"uri": args.data}
    if args.workers is not None:
        overrides["scale"] = {"workers": args.workers}
    if args.gpu:
        overrides.setdefault("scale", {})["use_gpu"] = True
    try:
        raw = merge_sections(raw, overrides)
        data_uri = (raw.get("data") or {}).get("uri", DEFAULT_DATA)
        check_before_ray(raw, storage_uri=args.storage, name=args.name, resume=args.resume,
                         data_checked_later=(not args.resume and _default_data_unprepared(raw))
                         or _checked_once_ray_is_up(data_uri, args))
    except (ValueError, TrainError) as error:
        raise UsageError(str(error)) from None
    tracking = check_tracking(args.mlflow, mlflow_experiment(TRAIN_EXPERIMENT))
    weights = inception_weights()
    cluster = init_ray(args)
    _require_shared_storage({"--data": raw.get("data", {}).get("uri", DEFAULT_DATA), "--storage": args.storage},
                            cluster)
    if not args.resume:
        ensure_default_data(raw, cluster)
    with train_tracking(tracking, "train") as tracker:
        try:
            outcome = train(raw, storage_uri=args.storage, name=args.name, resume=args.resume,
                            inception_weights=weights, cluster=cluster, show_progress=True, tracker=tracker)
        except TrainError as error:
            raise UsageError(str(error)) from None
    fid = f"FID {outcome.fid:.2f} (N={outcome.fid_num_images})" if outcome.fid is not None else "no FID"
    print(f"run {outcome.status}: {outcome.message}")
    print(f"  run folder:  {outcome.run_uri}")
    print(f"  sample grid: {outcome.sample_grid_uri}")
    print(f"  checkpoint:  {outcome.best_checkpoint_uri or outcome.latest_checkpoint_uri}")
    print(f"  {fid} at step {outcome.step}")
    if tracker is not None and tracker.url:
        print(f"  MLflow run:  {tracker.url}")
    if outcome.report_uri:
        print(f"  report:      {outcome.report_uri}   (open it in a browser)")
    return 0 if outcome.status == "completed" else 1


def run_tune(args: argparse.Namespace) -> int:
    import datetime

    from pokegan_ray.search.results import leaderboard_table
    from pokegan_ray.search.runner import SearchError, plan_search, run_search
    from pokegan_ray.search.space import SearchSpace
    from pokegan_ray.training.config import parse_assignments

    for option in ("samples", "concurrent"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise UsageError(f"--{option} must be at least 1, got {getattr(args, option)}")
    space = None
    if args.resume:
        if not args.name:
            raise UsageError("--resume needs the search's --name")
        if args.space or args.assignments or args.data:
            raise UsageError("--resume continues a search with its saved space, data and settings; drop "
                             "--space/--set/--data")
    else:
        if not args.space:
            raise UsageError("--space is required, e.g. --space search_spaces/quick.yaml")
        try:
            space = SearchSpace.load(args.space)
            overrides = parse_assignments(args.assignments)
        except ValueError as error:
            raise UsageError(str(error)) from None
    name = args.name or (f"{os.path.splitext(os.path.basename(args.space))[0]}-"
                         f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}")
    search = dict(storage_uri=args.storage, name=name, data_uri=args.data, overrides=None if args.resume else overrides,
                  samples=args.samples, concurrent=args.concurrent, resume=args.resume)
    prepared_later = not args.resume and not args.data and _default_data_unprepared({})
    asked = check_tracking(args.mlflow, mlflow_experiment(SEARCH_EXPERIMENT_PREFIX + name), reach=False)
    try:
        plan = plan_search(space, **search, data_checked_later=prepared_later or (  # mistakes fail before Ray
            not args.resume and _checked_once_ray_is_up(args.data or DEFAULT_DATA, args)), tracking=asked)
    except SearchError as error:
        raise UsageError(str(error)) from None
    if plan.tracking is not None:  # a resumed search's own, or --mlflow's
        check_tracking(plan.tracking.uri, plan.tracking.experiment)
    weights = inception_weights()
    cluster = init_ray(args)
    if not args.resume:
        _require_shared_storage({"--data": args.data or DEFAULT_DATA, "--storage": args.storage}, cluster)
    if prepared_later:
        ensure_default_data({}, cluster)
    try:
        outcome = run_search(space, **search, inception_weights=weights, cluster=cluster, plan=plan)
    except SearchError as error:
        raise UsageError(str(error)) from None
    print()
    print(leaderboard_table(outcome.records, outcome.space, outcome.unit))
    print()
    print(f"search:          {outcome.search_uri}")
    print(f"leaderboard:     {outcome.leaderboard_uri}")
    print(f"FID plot:        {outcome.plot_uri}")
    if plan.tracking is not None:
        print(f"MLflow:          experiment {plan.tracking.experiment!r} at {plan.tracking.uri}")
    follow_up = f"continue it with: pokegan tune --resume --name {name} --storage {args.storage}"
    # The page with all of it comes last, whatever the ending.
    report = (f"report:          {outcome.report_uri}   (open it in a browser)" if outcome.report_uri
              else "report:          not written (see the warning above)")
    if outcome.failure:
        print(f"the search stopped: {outcome.failure}")
        print(report)
        print(follow_up)
        return 1
    if outcome.interrupted:
        print(report)
        print(f"the search was interrupted; {follow_up}")
        return 130
    if outcome.best is None:
        print("no trial produced an FID: see the reasons above")
        print(report)
        return 1
    best = outcome.best
    print(f"best trial:      {best.number} (FID {best.last_fid:.2f} after {best.images_seen:,} images; "
          f"its best {best.best_fid:.2f})")
    print(f"best config:     {outcome.best_config_uri}   (pokegan train --config FILE)")
    print(f"best checkpoint: {outcome.best_checkpoint_uri}")
    print(f"best samples:    {outcome.best_samples_uri}")
    print(report)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from pokegan_ray.data.prepare import PrepareError
    from pokegan_ray.metrics import InceptionWeightsError, weights_path_from_environment
    from pokegan_ray.storage import StorageError
    from pokegan_ray.training.checkpoint import CheckpointError
    from pokegan_ray.training.evaluation import evaluate_checkpoint

    try:
        scores, step, data_uri = evaluate_checkpoint(args.checkpoint, data_uri=args.data, num_images=args.images,
                                                     weights_path=weights_path_from_environment(),
                                                     device=args.device)
    except (CheckpointError, PrepareError, StorageError, InceptionWeightsError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"FID {scores['fid']:.2f}  KID {scores['kid']:.5f} ± {scores['kid_std']:.5f}  "
          f"(N={int(scores['fid_num_images'])} generated vs {int(scores['fid_real_images'])} real originals, "
          f"step {step}, {data_uri})")
    return 0


def run_retrain(args: argparse.Namespace) -> int:
    from pokegan_ray.operations.lock import LockHeld
    from pokegan_ray.operations.registry import ModelRegistry, RegistryError
    from pokegan_ray.operations.retrain import RetrainConfigError, RetrainOptions, check_config, retrain
    from pokegan_ray.storage import StorageError
    from pokegan_ray.training.config import load_raw_config

    cluster = cluster_options(args)
    weights = inception_weights()
    try:
        options = RetrainOptions(
            registry_uri=args.registry, model_name=args.name, overrides=load_raw_config(args.config, args.assignments),
            data_uri=args.data, storage_uri=args.storage, margin=args.margin, warm_start=args.warm_start,
            wait_seconds=args.wait, lock_ttl_seconds=args.lock_ttl_hours * 3600,
            inception_weights=weights, device=args.device, cluster=cluster)
        check_config(ModelRegistry(args.registry, args.name), options)  # mistakes fail before Ray starts
    except (ValueError, RegistryError, RetrainConfigError) as error:
        raise UsageError(str(error)) from None
    options = dataclasses.replace(options, tracking=check_tracking(args.mlflow, mlflow_experiment(RETRAIN_EXPERIMENT)))
    init_ray(args)
    try:
        outcome = retrain(options)
    except LockHeld as error:
        print(f"pokegan retrain: not started: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except (RegistryError, RetrainConfigError, StorageError) as error:
        raise UsageError(str(error)) from None
    print(outcome.summary)
    return 1 if outcome.decision == "failed" else 0


def run_generate(args: argparse.Namespace) -> int:
    from pokegan_ray.operations.generate import GenerateError, generate
    from pokegan_ray.operations.registry import RegistryError
    from pokegan_ray.storage import StorageError
    from pokegan_ray.training.checkpoint import CheckpointError

    try:
        generate(args.model, out_uri=args.out, count=args.count, seed=args.seed, type_name=args.type_name,
                 interpolate=args.interpolate, registry_uri=args.registry, name=args.name, device=args.device)
    except (GenerateError, RegistryError, CheckpointError, StorageError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {args.count} images, grid.png{' and interpolation.gif' if args.interpolate else ''} to {args.out}")
    return 0


def check_tracking(uri: str | None, experiment: str, reach: bool = True):
    """`--mlflow URI`, checked before Ray starts (pokegan_ray.tracking.check_tracking): None without it. With
    reach=False only the URI itself (MLflow installed, no credentials in it)."""
    if not uri:
        return None
    from pokegan_ray.tracking import TrackingError, check_tracking as check

    try:
        return check(uri, experiment, reach=reach)
    except TrackingError as error:
        raise UsageError(str(error)) from None


def mlflow_experiment(default: str) -> str:
    """The MLflow experiment of a command's runs: MLflow's own MLFLOW_EXPERIMENT_NAME when set."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or default


def inception_weights() -> str | None:
    """The FID Inception weights every scored run needs, checked now (present, and the expected file) so a
    missing install fails before Ray starts, not in a worker minutes later. None: the default weights."""
    from pokegan_ray.metrics import InceptionWeightsError, weights_path_from_environment
    from pokegan_ray.metrics.inception import resolve_weights

    weights = weights_path_from_environment()
    try:
        resolve_weights(weights)
    except InceptionWeightsError as error:
        raise UsageError(str(error)) from None
    return os.path.abspath(weights) if weights else None


def ensure_default_data(raw: dict, cluster=None) -> None:
    """The bundled set is prepared on first use when training uses the default data location."""
    from pokegan_ray.data.prepare import PrepareOptions, prepare

    if _default_data_unprepared(raw):
        log.info("no prepared set at %s yet: preparing the bundled Pokémon set first", DEFAULT_DATA)
        prepare("bundled", DEFAULT_DATA, PrepareOptions(), cluster or cluster_options())


def _checked_once_ray_is_up(data_uri: str, args: argparse.Namespace) -> bool:
    """A local --data on a cluster joined through RAY_ADDRESS: whether the other nodes can see it (one node, or
    --shared-filesystem) is known once Ray is up, and that is the first thing to tell a user whose data is local;
    the data set itself is read after that check."""
    return (bool(os.environ.get("RAY_ADDRESS")) and not getattr(args, "shared_filesystem", False)
            and not data_uri.startswith("s3://"))


def _default_data_unprepared(raw: dict) -> bool:
    from pokegan_ray.data.prepare import MANIFEST_NAME
    from pokegan_ray.storage import location

    uri = (raw.get("data") or {}).get("uri", DEFAULT_DATA)
    return uri == DEFAULT_DATA and not location(uri).join(MANIFEST_NAME).exists()


def cluster_options(args: argparse.Namespace | None = None):
    """How this command treats the Ray cluster: its own local one, or the one RAY_ADDRESS names.
    Without `args` (a script), the options' defaults."""
    from pokegan_ray.cluster import ClusterOptions

    return ClusterOptions(pokegan_started=not os.environ.get("RAY_ADDRESS"),
                          wait_timeout_s=getattr(args, "cluster_timeout", DEFAULT_WAIT_TIMEOUT_S / 60) * 60,
                          shared_filesystem=getattr(args, "shared_filesystem", False))


def _require_shared_storage(places: dict[str, str], cluster) -> None:
    from pokegan_ray.cluster import ClusterError, require_shared_storage

    try:
        require_shared_storage(places, cluster)
    except ClusterError as error:
        raise UsageError(str(error)) from None


def init_ray(args: argparse.Namespace | None = None):
    """Join the cluster named by RAY_ADDRESS, or start a local one; returns the ClusterOptions."""
    from pokegan_ray import ray_compat, terminal

    # Ray Data's progress bars redraw every second from every worker and bury pokegan's own progress; told to
    # the workers of a joined cluster too (a local one inherits this process's environment).
    quiet = {"RAY_DATA_DISABLE_PROGRESS_BARS": os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS", "1")}
    os.environ.update(quiet)  # before ray.data is imported here, and inherited by a local cluster
    # Tune saves the search's state whenever a trial has rotated its kept checkpoints, which is what a fresh
    # --resume wants; its warning that this happens often is not for the user.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    from pokegan_ray.cluster import ray_init_arguments

    options = cluster_options(args)
    if not ray.is_initialized():
        # A local cluster gets its dashboard (it frees the placement groups of stopped trials) at an address
        # every worker is told, so a second Ray on the machine cannot confuse them.
        address = os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(logging_level=logging.WARNING, configure_logging=True,
                     **ray_init_arguments(address, quiet,
                                          worker_setup=None if terminal.verbose() else WORKER_SETUP))
        except RuntimeError as error:
            mismatch = version_mismatch(str(error))
            if mismatch is None:
                raise
            raise UsageError(f"cannot join the Ray cluster at {address}: {mismatch}") from None
    if not terminal.verbose():
        ray_compat.filter_forwarded_logs(terminal.keep_forwarded_line)
    return options


# Run by Ray in each worker process of a pokegan job: Ray's libraries there as quiet as in the driver.
WORKER_SETUP = "pokegan_ray.terminal.worker_setup"


def version_mismatch(ray_error: str) -> str | None:
    """What to do when Ray refuses this driver because the cluster runs another Python or Ray (a driver must
    match it), from Ray's `Version mismatch` message; None for any other error."""
    if not ray_error.startswith("Version mismatch"):
        return None
    versions = re.findall(r"Ray: (\S+)\s+Python: (\S+)", ray_error)
    if len(versions) != 2:
        return ray_error.splitlines()[0]
    (cluster_ray, cluster_python), (own_ray, own_python) = versions
    return (f"it runs Ray {cluster_ray} on Python {cluster_python}, this process Ray {own_ray} on Python "
            f"{own_python}, and a driver must match its Ray and Python minor version. Submit the command as a "
            f"job instead (`ray job submit --address http://HEAD:8265 -- pokegan ...`: any client Python "
            f"works), or run it from a Python {'.'.join(cluster_python.split('.')[:2])} environment")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pokegan_ray import terminal

    # pokegan's own lines; Ray's, Ray Data's, Tune's and Optuna's output kept out of the way unless -v.
    terminal.setup_logging(args.verbose)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"pokegan {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
