"""The `pokegan` command. The only module that reads the environment or starts Ray.

Each subcommand is one function `run_<name>(args)`; heavy imports (torch, Ray) happen
inside them so `pokegan --help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger("pokegan_ray")

DEFAULT_DATA = os.path.join("artifacts", "data", "bundled")


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit status 2."""


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
    prepare.set_defaults(handler=run_prepare)
    return parser


def run_prepare(args: argparse.Namespace) -> int:
    from pokegan_ray.data.prepare import PrepareError, PrepareOptions, prepare

    try:
        options = PrepareOptions(resolutions=args.resolutions, augment=args.augment, seed=args.seed,
                                 min_side_px=args.min_size, limit=args.limit)
    except PrepareError as error:
        raise UsageError(str(error)) from None
    init_ray()
    try:
        manifest = prepare(args.source, args.dest, options)
    except PrepareError as error:
        raise UsageError(str(error)) from None
    print(f"prepared {manifest['kept']} images -> {manifest['rows']} rows at {args.dest} "
          f"(content hash {manifest['content_hash'][:12]}, {len(manifest['skipped'])} skipped)")
    return 0


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS, or start a local one."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING,
                 configure_logging=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[pokegan] %(message)s", stream=sys.stderr)
    # Ray and its dependencies log at INFO through the root logger; keep our lines readable.
    for noisy in ("ray", "urllib3", "botocore", "s3fs", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"pokegan {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
