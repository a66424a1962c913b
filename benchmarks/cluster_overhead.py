"""What each search trial costs the cluster besides its training: start-up time, Ray processes, memory.

Runs on a local multi-node Ray (`ray.cluster_utils.Cluster`: a 0-CPU head, as cluster.yaml's, and
worker nodes), a search of many tiny trials (8-channel networks, a few steps each), in the two forms
a trial can take:

- in-trial: a single-worker trial runs the training loop inside its Tune trial process (what
  `pokegan tune` does for `scale.workers: 1`, e.g. quick.yaml and default.yaml);
- ray-train: a trial starts a TorchTrainer of its own (what a multi-worker trial does; here with
  2 DDP workers), with Ray Train's controller and helper actors.

For each it prints the seconds from Tune starting a trial to the trial's first training step
(median and p90), the Ray processes and resident memory each running trial adds, by process kind
(sampled twice a second), and the search driver's CPU seconds per trial.

    python benchmarks/cluster_overhead.py [--trials 40] [--train-trials 4] [--nodes 2] [--cpus-per-node 2]
                                          [--concurrent 2]

Last line (in-trial): `cluster_overhead: trial_start_s=<s> memory_per_trial_mb=<mb> processes_per_trial=<n>`,
where memory and processes count what a trial adds besides its worker (goals: <= 5 s, <= 500 MB).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import socket
import statistics
import tempfile
import threading
import time

from pokegan_ray.cluster import ClusterOptions, ray_init_arguments
from pokegan_ray.data import PrepareOptions, prepare
from pokegan_ray.search.runner import run_search
from pokegan_ray.search.space import SearchSpace
from pokegan_ray.storage import location

# The kinds of Ray process a trial can start; the trial's own training process is its "worker".
TRIAL_PROCESS = "ImplicitFunc"  # Tune's function-trainable actor
TRAIN_WORKER = "RayTrainWorker"


def tiny_space(trials: int, concurrent: int, workers: int) -> SearchSpace:
    return SearchSpace.from_dict({
        "description": "cluster overhead",
        "base": {"model": {"generator_channels": 8, "discriminator_channels": 8, "latent_size": 16},
                 "train": {"steps": 8, "batch_size": 8, "report_every": 4, "eval_every": 8, "eval_images": 8,
                           "sample_every": 8, "checkpoint_every": 8, "keep_checkpoints": 1,
                           "mixed_precision": False},
                 "scale": {"workers": workers, "cpus_per_worker": 0.5, "threads_per_worker": 1}},
        "dimensions": {"loss.generator_learning_rate": {"type": "float", "low": 1.0e-4, "high": 3.0e-4}},
        "search": {"samples": trials, "concurrent": concurrent, "scheduler": "none", "seed": 0}},
        source="cluster-overhead")


class ProcessSampler:
    """Twice a second: every process of the cluster (its temp dir in the command line or an open file), by
    kind, with its resident memory; and how many trials run (their training processes)."""

    def __init__(self, temp_dir: str, trial_kind: str):
        self.temp_dir = temp_dir
        self.trial_kind = trial_kind
        self.baseline = {pid for pid, _, _ in self.snapshot()}
        self.samples: list[tuple[int, dict[str, list[float]]]] = []  # (running trials, kind -> [rss MB])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self) -> list[tuple[int, str, float]]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode(errors="replace")
                if self.temp_dir not in command and not any(
                        os.readlink(f"/proc/{entry}/fd/{fd}").startswith(self.temp_dir)
                        for fd in os.listdir(f"/proc/{entry}/fd")):
                    continue
                with open(f"/proc/{entry}/status") as handle:
                    rss_kb = next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0)
            except OSError:
                continue
            kind = command.split()[0].split(".")[0].removeprefix("ray::") if command.startswith("ray::") else \
                os.path.basename(command.split()[0]) if command else "?"
            found.append((int(entry), kind, rss_kb / 1024))
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            added: dict[str, list[float]] = collections.defaultdict(list)
            for pid, kind, rss in self.snapshot():
                if pid not in self.baseline:
                    added[kind].append(rss)
            running = len(added.get(self.trial_kind, []))
            if running:
                self.samples.append((running, dict(added)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def per_trial(self) -> dict[str, tuple[float, float]]:
        """kind -> (processes per running trial, MB per running trial), medians over the samples."""
        kinds = {kind for _, added in self.samples for kind in added}
        return {kind: (statistics.median(len(added.get(kind, [])) / running for running, added in self.samples),
                       statistics.median(sum(added.get(kind, [])) / running for running, added in self.samples))
                for kind in sorted(kinds)}


def measure(kind: str, trials: int, concurrent: int, workers: int, data: str, storage: str, temp_dir: str,
            worker_kind: str) -> tuple[float, float, float]:
    """Run one search; print its numbers; return (median start s, MB and processes besides the worker)."""
    space = tiny_space(trials, concurrent, workers)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with ProcessSampler(temp_dir, TRIAL_PROCESS) as sampler:
        outcome = run_search(space, storage_uri=storage, name=kind, data_uri=data,
                             cluster=ClusterOptions(pokegan_started=False, shared_filesystem=True))
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)

    starts, after_tune_start = [], []
    for record in outcome.records:
        history = json.loads(location(record.run_uri).join("history.json").read_bytes())
        first_step = min(entry["first_step_at"] for entry in history if entry.get("first_step_at"))
        starts.append(first_step - record.queued_at)
        after_tune_start.append(first_step - record.started_at)
    completed = sum(record.status == "completed" for record in outcome.records)
    starts.sort()
    p90 = starts[min(len(starts) - 1, int(0.9 * len(starts)))]
    print(f"\n{kind}: {len(outcome.records)} trials ({completed} completed) in {seconds:.0f} s, {concurrent} at once")
    print(f"  trial created -> first step: median {statistics.median(starts):.1f} s, p90 {p90:.1f} s, "
          f"min {starts[0]:.1f} s, max {starts[-1]:.1f} s  (placing it, starting its process, reading the data, "
          "building the networks)")
    print(f"  of which after Tune had started its process: median {statistics.median(after_tune_start):.1f} s")
    per_trial = sampler.per_trial()
    for name, (processes, megabytes) in sorted(per_trial.items(), key=lambda item: -item[1][1]):
        print(f"  per running trial: {processes:4.1f} x {name:<32} {megabytes:7.0f} MB")
    besides = {name: value for name, value in per_trial.items() if name != worker_kind}
    memory = sum(megabytes for _, megabytes in besides.values())
    processes = sum(count for count, _ in besides.values())
    worker_mb = per_trial.get(worker_kind, (0, 0))[1]
    print(f"  besides the worker ({worker_kind}, {worker_mb:.0f} MB): {processes:.1f} processes, {memory:.0f} MB")
    print(f"  driver CPU: {driver_cpu / len(outcome.records):.2f} s per trial ({driver_cpu:.0f} s in all)")
    return statistics.median(starts), memory, processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="in-trial trials (default: 40)")
    parser.add_argument("--train-trials", type=int, default=4, help="ray-train trials; 0 skips them (default: 4)")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes (default: 2)")
    parser.add_argument("--cpus-per-node", type=float, default=2, help="CPUs each worker node offers (default: 2)")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once (default: 2)")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="co-", dir="/tmp")  # short: Ray's socket paths live under it
    work = tempfile.mkdtemp(prefix="cluster-overhead-")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": free_port(), "temp_dir": temp_dir})
    try:
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=args.cpus_per_node)
        ray.init(logging_level="WARNING", **ray_init_arguments(cluster.address, {}))
        data = os.path.join(work, "data")
        prepare("bundled", data, PrepareOptions(resolutions=(64,), augment=0, limit=64),
                ClusterOptions(pokegan_started=False))
        print(f"Ray {ray.__version__}: a 0-CPU head and {args.nodes} worker node(s) x {args.cpus_per_node:g} CPU; "
              f"trials of 8 steps on 64 bundled images", flush=True)
        start_s, memory_mb, processes = measure("in-trial", args.trials, args.concurrent, 1, data,
                                                os.path.join(work, "searches"), temp_dir, TRIAL_PROCESS)
        if args.train_trials:
            measure("ray-train", args.train_trials, 1, 2, data, os.path.join(work, "searches"), temp_dir,
                    TRAIN_WORKER)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"cluster_overhead: trial_start_s={start_s:.1f} memory_per_trial_mb={memory_mb:.0f} "
          f"processes_per_trial={processes:.1f}")


if __name__ == "__main__":
    main()
