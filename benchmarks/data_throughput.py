"""Images per second from a prepared set in (moto) S3 into torch batches: Ray Data vs. pyarrow directly.

Both paths read the same Parquet shards from the same S3 endpoint and end with float32
NCHW tensors in [-1, 1], batch by batch: Ray Data through `open_prepared` + `iter_images`
(what a training worker uses when it streams), the direct path with pyarrow in this
process. Each path is warmed up by one pass, then timed over `--epochs` passes.

    python benchmarks/data_throughput.py [--images 1008] [--augment 10] [--epochs 2] [--batch 256]

Last line: `data_throughput: ray=<img/s> direct=<img/s> ratio=<ray/direct>`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import boto3
import pyarrow.parquet as pq
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1008, help="bundled source images to prepare")
    parser.add_argument("--augment", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="full passes timed on each path")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL_S3=f"http://{host}:{port}", AWS_EC2_METADATA_DISABLED="true")
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="bench")

    import ray

    from pokegan_ray.data import (PrepareOptions, iter_images, open_prepared, pixels_to_nchw, prepare, prepared_files,
                                  to_model_range)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    uri = "s3://bench/pokemon"
    started = time.perf_counter()
    manifest = prepare("bundled", uri, PrepareOptions(resolutions=(args.resolution,), augment=args.augment,
                                                      limit=args.images))
    rows = manifest["rows_per_resolution"][str(args.resolution)]
    print(f"prepared {rows} rows of {args.resolution} px in moto S3 in {time.perf_counter() - started:.1f} s")

    first_batch_seconds: list[float] = []

    def ray_pass() -> int:
        seen, started = 0, time.perf_counter()
        for images, _labels in iter_images(open_prepared(uri, args.resolution), batch_size=args.batch):
            if not seen:
                first_batch_seconds.append(time.perf_counter() - started)
            seen += images.shape[0]
        return seen

    _, paths, filesystem = prepared_files(uri, args.resolution)

    def direct_pass() -> int:
        seen = 0
        for path in paths:
            with filesystem.open_input_file(path) as handle:
                table = pq.read_table(handle, columns=["pixels", "label"])
            for start in range(0, table.num_rows, args.batch):
                chunk = table.slice(start, args.batch)
                images = to_model_range(torch.from_numpy(pixels_to_nchw(chunk.column("pixels"))))
                _labels = torch.from_numpy(chunk.column("label").to_numpy().astype("int64"))
                seen += images.shape[0]
        return seen

    rates = {}
    for name, one_pass in (("ray", ray_pass), ("direct", direct_pass)):
        one_pass()  # warm-up: first S3 connections, Ray Data operator start
        started = time.perf_counter()
        seen = sum(one_pass() for _ in range(args.epochs))
        seconds = time.perf_counter() - started
        rates[name] = seen / seconds
        print(f"{name:>6}: {seen} images in {seconds:.2f} s = {rates[name]:,.0f} img/s")
    # Ray Data's cost is mostly a fixed start per pass (planning, launching read tasks), not per image;
    # it is why a training worker reads its shard once and keeps it in memory.
    startup = sum(first_batch_seconds[1:]) / max(len(first_batch_seconds) - 1, 1)
    print(f"   ray: mean time to first batch per pass {startup:.2f} s of {args.epochs} timed passes")

    ray.shutdown()
    server.stop()
    print(f"data_throughput: ray={rates['ray']:.0f} direct={rates['direct']:.0f} "
          f"ratio={rates['ray'] / rates['direct']:.2f}")


if __name__ == "__main__":
    main()
