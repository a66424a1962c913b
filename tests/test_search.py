"""`pokegan tune` on a real local Ray: Optuna proposes, ASHA cuts on FID, failures are recorded, resume works.

Trials are tiny (8-channel networks, a dozen steps, FID on 8 images), so they check the
orchestration, not image quality. The first trials are pinned (`search.first_trials`) so each
test knows which trial is meant to do what; Optuna's sampler and training are seeded.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from drivers import library_noise
from local_clusters import short_temp_dir, stop_processes_under
from image_files import prepare_two_type_set
from pokegan_ray import cli
from pokegan_ray.cluster import ClusterOptions
from pokegan_ray.search.ledger import COMPLETED, FAILED, STOPPED, Ledger
from pokegan_ray.search.runner import SearchError, run_search
from pokegan_ray.search.space import SearchSpace
from pokegan_ray.storage import location
from pokegan_ray.tracking import check_tracking

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
# Trials are measured in real images seen (compute-fair): 12 DCGAN steps of 8 images, an FID every 4 of them.
STEPS, RUNG_IMAGES = 12, 32
BASE = {
    "model": {"generator_channels": 8, "discriminator_channels": 8, "latent_size": 16},
    "train": {"images": 8 * STEPS, "batch_size": 8, "report_every": RUNG_IMAGES, "eval_every": RUNG_IMAGES,
              "sample_every": 8 * STEPS, "checkpoint_every": RUNG_IMAGES, "keep_checkpoints": 1,
              "mixed_precision": False},
    "scale": {"workers": 1, "use_gpu": False, "cpus_per_worker": 0.5, "threads_per_worker": 1},
}
DIMENSIONS = {
    "loss.name": {"type": "categorical", "values": ["dcgan", "wgan-gp"]},
    "loss.n_critic": {"type": "int", "low": 1, "high": 3, "when": {"loss.name": ["wgan-gp"]}},
    # Up to absurd: Adam at 0.3 saturates the generator in a few steps, so that trial's FID is far worse
    # at the first rung, which is what the early-stopping test needs from one trial.
    "loss.generator_learning_rate": {"type": "float", "low": 1.0e-5, "high": 0.3, "log": True},
    "train.eval_images": {"type": "categorical", "values": [8, 4]},
    # 1e30 overflows the weights within a few steps: a real way for a trial to fail.
    "loss.discriminator_learning_rate": {"type": "categorical", "values": [2.0e-4, 1.0e+30]},
}


def space(first_trials: list[dict], samples: int | None = None, **settings) -> SearchSpace:
    search = {"samples": samples or len(first_trials), "first_trials": first_trials, "reduction_factor": 2,
              **settings}
    return SearchSpace.from_dict({"description": "test", "base": BASE, "dimensions": DIMENSIONS,
                                  "search": search}, source="test-space")


def trial(name: str, **values) -> dict:
    return {"loss.name": name, "train.eval_images": 8, "loss.discriminator_learning_rate": 2.0e-4,
            "loss.generator_learning_rate": 2.0e-4, **values}


@pytest.fixture(scope="module")
def labelled_data(ray_cluster, tmp_path_factory) -> str:
    return prepare_two_type_set(tmp_path_factory)


def test_search_runs_cuts_records_failures_and_its_best_config_trains(mlflow_server, ray_cluster, labelled_data,
                                                                      tmp_path, capsys):
    first = [
        trial("dcgan"),
        trial("wgan-gp", **{"loss.n_critic": 2}),
        trial("dcgan", **{"loss.discriminator_learning_rate": 1.0e+30}),  # fails: the search must go on
        trial("dcgan", **{"loss.generator_learning_rate": 0.3}),  # scores worst at the first rung: ASHA stops it
    ]
    tracking = check_tracking(mlflow_server.uri(), "pokegan-tune-tiny")  # every trial is logged to MLflow too
    outcome = run_search(space(first, signal="kid"), storage_uri=str(tmp_path / "searches"), name="tiny",
                         data_uri=labelled_data, tracking=tracking)
    records = {record.number: record for record in outcome.records}
    assert sorted(records) == [1, 2, 3, 4]
    assert not outcome.interrupted

    # Conditional dimensions: n_critic only where the loss is Wasserstein, in the params and the run's config.
    for record in records.values():
        assert ("loss.n_critic" in record.params) == (record.params["loss.name"] == "wgan-gp"), record.params
    assert records[2].params["loss.n_critic"] == 2
    # Compute-fair rungs: DCGAN (one critic batch a step) and WGAN-GP (two) are first scored after equal images.
    assert [records[n].history[0]["images_seen"] for n in (1, 2)] == [RUNG_IMAGES, RUNG_IMAGES]
    assert [records[n].history[0]["step"] for n in (1, 2)] == [4, 2]
    run_configs = {n: yaml.safe_load(location(r.run_uri).join("config.yaml").read_bytes())
                   for n, r in records.items() if n in (1, 2)}
    assert run_configs[2]["loss"]["n_critic"] == 2
    assert run_configs[1]["loss"]["n_critic"] == 1  # not sampled: DCGAN's own single D step

    # The failing trial is recorded with its reason, and later trials still ran.
    assert records[3].status == FAILED
    assert re.search(r"non-finite at step (4|8|12)\b", records[3].reason), records[3].reason  # a report step
    assert records[4].history

    # Early stopping is real: trial 4 saw fewer images than a full trial, and the scheduler said so.
    assert records[1].status == COMPLETED and records[1].step == STEPS
    assert records[4].status == STOPPED, (records[4].status, records[4].history)
    assert records[4].step < STEPS and records[4].images_seen < records[1].images_seen
    assert "ASHA" in records[4].reason and f"(images {records[4].images_seen})" in records[4].reason
    # ... by the search's signal, KID, whose value at the rung the ledger keeps.
    rung = next(entry for entry in records[4].history if entry["images_seen"] == records[4].stop["images_seen"])
    assert records[4].stop == {"by": "asha", "signal": "kid", "value": rung["kid"], "step": rung["step"],
                               "images_seen": rung["images_seen"]}
    assert "KID" in records[4].reason and all(math.isfinite(entry["fid_infinity"]) for entry in records[1].history)

    # Results: leaderboard (CSV and table), plot, best config, best checkpoint and its samples.
    folder = tmp_path / "searches" / "tiny"
    rows = list(csv.DictReader(open(folder / "leaderboard.csv")))
    assert [int(row["trial"]) for row in rows][-1] == 3  # the failed trial ranks last
    assert {row["status"] for row in rows} >= {COMPLETED, STOPPED, FAILED}
    # At equal compute: the completed trials first, by the FID of their last evaluation.
    completed = [float(row["last_fid"]) for row in rows if row["status"] == COMPLETED]
    assert rows[0]["status"] == COMPLETED and completed == sorted(completed) and math.isfinite(completed[0])
    assert rows[0]["trial_id"] == outcome.best.trial_id
    assert {(row["rung_signal"], row["rung_unit"]) for row in rows} == {("kid", "images")}
    assert (folder / "fid_vs_images.png").read_bytes()[:4] == b"\x89PNG"
    assert Image.open(folder / "best_samples.png").size[0] > 64
    assert outcome.best_checkpoint_uri and os.path.exists(os.path.join(outcome.best_checkpoint_uri, "checkpoint.pt"))

    # MLflow: one run per trial, with its sampled params and resolved config, its FID history over images seen,
    # its sample grid and the checkpoint of its best FID.
    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name("pokegan-tune-tiny")
    runs = {run.data.tags["trial_id"]: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(record.trial_id for record in records.values())
    for record in records.values():
        run = runs[record.trial_id]
        assert {name: run.data.params[name] for name in record.params} == \
            {name: str(value) for name, value in record.params.items()}
        fids = sorted(client.get_metric_history(run.info.run_id, "fid"), key=lambda metric: metric.step)
        assert [(metric.step, metric.value) for metric in fids] == \
            [(entry["images_seen"], pytest.approx(entry["fid"])) for entry in record.history]
        assert (run.data.tags["status"], run.info.status) == \
            (record.status, "FAILED" if record.status == FAILED else "FINISHED")
        if record.history:
            assert run.data.params["train.batch_size"] == "8"  # the resolved config, beyond the sampled params
    for record in (records[1], records[2]):  # the completed trials: their last grid and best checkpoint
        artifacts = client.list_artifacts(runs[record.trial_id].info.run_id, "samples")
        assert [artifact.path for artifact in artifacts] == [f"samples/step-{record.step:07d}.png"]
        assert runs[record.trial_id].data.tags["best_checkpoint_uri"] == record.best_checkpoint_uri()
    # The report: one page with a row per trial, the ends they came to, and the best trial's grid; the outcome and
    # the summary name it (tests/test_report.py opens such a page in a browser).
    assert outcome.report_uri == str(folder / "report.html")
    assert json.loads((folder / "summary.json").read_text())["report_uri"] == outcome.report_uri
    page = (folder / "report.html").read_text()
    assert re.findall(r'<tr data-trial="(\d+)">', page) == [row["trial"] for row in rows]
    assert all(f'<span class="status {status}">' in page for status in (COMPLETED, STOPPED, FAILED))
    assert 'id="best-grid" src="data:image/jpeg;base64,' in page and "Early stopping saved" in page

    best_config = folder / "best_config.yaml"
    assert yaml.safe_load(best_config.read_text())["loss"]["name"] == outcome.best.params["loss.name"]
    capsys.readouterr()
    status = cli.main(["train", "--config", str(best_config), "--storage", str(tmp_path / "runs"),
                       "--name", "from-best", "--set", "train.steps=4", "--mlflow", tracking.uri])
    printed = capsys.readouterr()
    assert status == 0, printed
    run_folder = tmp_path / "runs" / "from-best"
    assert (run_folder / "status.json").exists()
    # `pokegan train` writes the same page for its run, and says where, last.
    run_page = run_folder / "report.html"
    assert printed.out.rstrip().splitlines()[-1].split()[:2] == ["report:", str(run_page)]
    assert re.findall(r'<tr data-trial="(\d+)">', run_page.read_text()) == ["1"] and "completed" in run_page.read_text()
    # ... and `pokegan train --mlflow` logs its run from the driver as Ray Train reports.
    [run] = client.search_runs([client.get_experiment_by_name("pokegan-train").experiment_id],
                               "tags.run_name = 'from-best'")
    assert f"MLflow run:  {tracking.uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in printed.out
    assert run.data.params["loss.name"] == outcome.best.params["loss.name"] and run.data.params["train.steps"] == "4"
    history = json.loads((run_folder / "history.json").read_text())
    fids = sorted(client.get_metric_history(run.info.run_id, "fid"), key=lambda metric: metric.step)
    assert [(metric.step, metric.value) for metric in fids] == \
        [(entry["images_seen"], pytest.approx(entry["fid"])) for entry in history if "fid" in entry] != []
    assert [artifact.path for artifact in client.list_artifacts(run.info.run_id, "samples")] == \
        [f"samples/{path.name}" for path in sorted((run_folder / "samples").glob("*.png"))] != []
    assert run.data.tags["best_checkpoint_uri"].startswith(str(run_folder / "checkpoint_"))
    assert run.info.status == "FINISHED"


def test_asha_ranks_a_rung_by_the_searchs_signal_and_records_it(tmp_path):
    """At one rung, FID and KID disagree: the signal decides which trial stops, and the stop log says so."""
    from pokegan_ray.search.runner import StopLog, _asha

    rung = {"step": 4, "images_seen": RUNG_IMAGES, "evaluated": 1.0}
    results = {"a": {"fid": 100.0, "kid": 0.30}, "b": {"fid": 200.0, "kid": 0.10},
               "c": {"fid": 150.0, "kid": 0.35},  # worst KID, middling FID
               "d": {"fid": 300.0, "kid": 0.05}}  # worst FID, best KID
    decisions = {}
    for rung_signal in ("fid", "kid"):
        stops = StopLog(location(str(tmp_path / rung_signal)))
        scheduler = _asha(stops, "images", 8 * STEPS, RUNG_IMAGES, 2.0, rung_signal)
        for trial_id, scores in results.items():
            trial = types.SimpleNamespace(trial_id=trial_id)
            scheduler.on_trial_add(None, trial)
            scheduler.on_trial_result(None, trial, {**rung, **scores, "fid_infinity": math.nan})
        decisions[rung_signal] = stops
    assert set(decisions["kid"].reasons()) == {"c"}
    assert decisions["kid"].decision("c") == {"by": "asha", "signal": "kid", "value": 0.35, "step": 4,
                                              "images_seen": RUNG_IMAGES}
    assert "KID 0.3500" in decisions["kid"].reasons()["c"]
    # On FID the same results stop the two trials with the worse FIDs instead (b is behind a when it arrives).
    assert set(decisions["fid"].reasons()) == {"b", "d"} and "FID 300.0" in decisions["fid"].reasons()["d"]


def test_the_search_picks_trials_at_equal_compute_by_their_last_fid_not_their_luckiest_one(tmp_path):
    """A trial's best FID is the minimum of many noisy evaluations: the trial with the lowest FID of all, reached
    at its first rung, was then cut, and another peaked mid-run and ended worse. The leaderboard, the best config
    and what Optuna learns all go by where trials ended, at equal compute."""
    from pokegan_ray.search.ledger import TrialRecord
    from pokegan_ray.search.results import best_trial, leaderboard_table, ranked
    from pokegan_ray.search.runner import _searcher

    def record_of(number: int, status: str, fids: list[float], batch_images: int = 32) -> TrialRecord:
        history = [{"step": 75 * index, "images_seen": 75 * batch_images * index, "fid": fid, "kid": fid / 1000,
                    "fid_infinity": fid} for index, fid in enumerate(fids, start=1)]
        return TrialRecord(trial_id=f"t{number}", number=number, params={}, run_uri="", status=status,
                           history=history)

    records = [record_of(1, STOPPED, [300.0, 420.0]),  # the lowest FID of all, at 2,400 images; cut at 4,800
               record_of(2, COMPLETED, [380.0, 360.0, 350.0, 340.0]),
               record_of(3, COMPLETED, [390.0, 310.0, 330.0, 370.0]),  # best 310 mid-run, ends at 370
               record_of(4, STOPPED, [400.0]), record_of(5, FAILED, []),
               # cut at the same rung as trial 1, its images a little ahead (2 critic steps of 16 a step):
               # the same rung, so the FID there decides
               record_of(6, STOPPED, [390.0, 425.0], batch_images=33)]
    assert [record.number for record in ranked(records)] == [2, 3, 1, 6, 4, 5]
    assert best_trial(records).number == 2
    kid_space = space([trial("dcgan")], signal="kid")
    table = leaderboard_table(records, kid_space, "images")
    assert [int(line.split()[1]) for line in table.splitlines()[3:] if not line.lstrip().startswith("->")] == \
        [2, 3, 1, 6, 4, 5]

    # Optuna learns a trial's signal where it ended (Tune's OptunaSearch reads the last result), not its best.
    searcher = _searcher(kid_space, kid_space.settings, {"classes": []}, concurrent=1)
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", result={"kid": 0.37, "best_kid": 0.30, "fid": 370.0, "best_fid": 310.0})
    assert [frozen.value for frozen in searcher._ot_study.trials] == [0.37]


def test_trials_that_share_a_node_split_its_cores_instead_of_each_taking_the_threads_of_a_lone_trial():
    from pokegan_ray.search.runner import threads_per_trial
    from pokegan_ray.training.config import ScaleConfig

    quick = ScaleConfig(workers=1, cpus_per_worker=0.5, threads_per_worker=2)  # quick.yaml's: a lone trial, 2 cores
    two_cores = [{"CPU": 2.0}]
    assert threads_per_trial(quick, 1, two_cores) == 0  # alone: the config's own 2 threads
    assert threads_per_trial(quick, 4, two_cores) == 1  # PBT's population of 4: one core's share each, at most
    # Both may land on one node (Ray may pack them): the largest node decides, not the cluster's total.
    assert threads_per_trial(quick, 2, [{"CPU": 0.0}, {"CPU": 2.0}, {"CPU": 2.0}]) == 1
    assert threads_per_trial(quick, 4, [{"CPU": 8.0}]) == 0  # room for 2 threads each
    assert threads_per_trial(ScaleConfig(workers=1, cpus_per_worker=0.5), 4, two_cores) == 0  # Ray's choice: 1
    assert threads_per_trial(ScaleConfig(workers=2, cpus_per_worker=0.5, threads_per_worker=2), 4, two_cores) == 0


def test_pbt_continues_a_worse_trial_from_a_better_ones_checkpoint_with_perturbed_rates_even_across_a_resume(
        ray_cluster, labelled_data, tmp_path):
    rates = {"type": "float", "low": 1.0e-5, "high": 0.3, "log": True, "mutable": True}
    space_file = tmp_path / "pbt.yaml"
    space_file.write_text(yaml.safe_dump(sort_keys=False, data={
        # 64 images a trial: one perturbation, after the first evaluation (32 images).
        # Two DDP workers a trial: each trial's own TorchTrainer (Ray Train V2) resumes from its own checkpoints
        # unless the copy is handed over explicitly.
        "description": "pbt", "base": {**BASE, "train": {**BASE["train"], "images": 2 * RUNG_IMAGES,
                                                         "sample_every": 2 * RUNG_IMAGES, "eval_images": 8},
                                       "scale": {**BASE["scale"], "workers": 2, "cpus_per_worker": 0.2}},
        # The loss is not mutable: the worse trial takes the better one's with its checkpoint, and none of the
        # defaults its own loss resolved (hinge's Adam betas (0.5, 0.9); dcgan's are (0.5, 0.999)).
        "dimensions": {"loss.name": {"type": "categorical", "values": ["dcgan", "hinge"]},
                       "loss.generator_learning_rate": rates,
                       # Switched off for dcgan: PBT's points hold it as None, which is "not sampled".
                       "loss.r1_gamma": {"type": "categorical", "values": [0.0], "when": {"loss.name": ["hinge"]}}},
        "search": {"samples": 2, "concurrent": 2, "scheduler": "pbt", "pbt_quantile": 0.5,
                   "first_trials": [{"loss.name": "dcgan", "loss.generator_learning_rate": 2.0e-4},
                                    {"loss.name": "hinge", "loss.generator_learning_rate": 0.3}]}}))  # clearly worse
    storage = tmp_path / "searches"
    # Ctrl+C right after the copy, before the worse trial trains on: Tune's saved state then still points
    # the worse trial at its own older checkpoint, and --resume must go on from the copy regardless.
    command = [sys.executable, "-m", "pokegan_ray.cli", "tune", "--space", str(space_file), "--data", labelled_data,
               "--storage", str(storage), "--name", "pbt"]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # its own local Ray
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in driver.stdout:
        seen.append(line)
        if re.search(r"trial \d continues from trial \d's checkpoint at step 4 \(32 images\)", line):
            driver.send_signal(signal.SIGINT)
            break
    rest, _ = driver.communicate(timeout=300)
    output = "".join(seen) + rest
    assert driver.returncode == 130, output[-3000:]
    assert "pokegan tune --resume --name pbt" in output  # Ctrl+C says how to go on
    # What `pokegan tune` prints off a terminal (issue 14): pokegan's own plain lines, one per trial event (each
    # trial's start, its evaluation, the copy), not its trials' training steps, nor Ray's, Ray Data's (the trials'
    # TorchTrainers read through it), Ray Train's or Optuna's logging.
    assert not library_noise(output), library_noise(output)
    events = [line for line in output.splitlines() if line.startswith("[pokegan] trial ")]
    assert len([line for line in events if re.fullmatch(r"\[pokegan\] trial \d/2 \w+ started: .*", line)]) == 2
    assert len([line for line in events if "continues from trial" in line]) == 1, events
    assert not any("[pokegan] step " in line for line in output.splitlines()), output[-3000:]
    assert not any("\x1b" in line or "\r" in line for line in events)
    assert not any("=None" in line for line in events), events  # a switched-off dimension is not shown

    def results(record):
        lines = (storage / "pbt" / f"trial_{record.trial_id}" / "result.json").read_text().splitlines()
        return [json.loads(line) for line in lines]

    # Tune starts them in either order: the worse trial is the one that took the other's checkpoint.
    worse, better = sorted(Ledger(location(str(storage / "pbt"))).records(), key=lambda r: -len(r.exploitations))
    assert len(worse.exploitations) == 1 and worse.status != COMPLETED
    copy = worse.exploitations[0]
    donor = next(r for r in results(better) if r["step"] == copy["step"] and "generator_checksum" in r)

    outcome = run_search(None, storage_uri=str(storage), name="pbt", resume=True)
    records = outcome.records
    assert {record.status for record in records} == {COMPLETED} and not outcome.interrupted
    worse, better = sorted(records, key=lambda record: -len(record.exploitations))
    assert len(worse.exploitations) == 1 and not better.exploitations  # none at the end: nothing left to train
    assert set(better.params) == {"loss.name", "loss.generator_learning_rate"}  # dcgan's: no r1_gamma
    assert worse.exploitations[0] == copy
    assert copy["from_trial"] == better.trial_id and copy["images_seen"] == RUNG_IMAGES
    rate = copy["changed"]["loss.generator_learning_rate"]
    assert rate["before"] == 0.3 and rate["copied"] == 2.0e-4 and rate["now"] not in (0.3, 2.0e-4)

    # The copy is exact (the generator's checksum as loaded is the one the better trial reported with that
    # checkpoint), its counters continue from there, and it trained on with the perturbed rate. The better
    # trial went on from its own checkpoint, not from scratch.
    resumed = [r for r in results(worse) if r.get("resumed_from_step") == copy["step"]]
    assert resumed and resumed[0]["resumed_generator_checksum"] == donor["generator_checksum"]
    assert resumed[0]["images_seen"] == 2 * RUNG_IMAGES and resumed[0]["handoffs"] == 1
    assert [r["resumed_from_step"] for r in results(better) if r["step"] > copy["step"]][:1] == [copy["step"]]
    run_config = yaml.safe_load(location(worse.run_uri).join("config.yaml").read_bytes())
    assert run_config["loss"]["generator_learning_rate"] == pytest.approx(rate["now"])
    assert worse.params["loss.generator_learning_rate"] == pytest.approx(rate["now"])
    assert worse.params["loss.name"] == run_config["loss"]["name"] == "dcgan"
    assert run_config["loss"]["adam_betas"] == [0.5, 0.999]  # the copied trial's, not a merge with its own


def test_resume_after_the_driver_is_killed_keeps_finished_trials_and_ends_every_trial(labelled_data, tmp_path):
    """SIGKILL, not Ctrl+C: Tune's saved state is older than what happened, and the old local Ray's processes
    are still about when the resumed search starts its own."""
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(sort_keys=False, data={
        "description": "crash test", "base": BASE, "dimensions": DIMENSIONS,
        "search": {"samples": 3, "scheduler": "none", "first_trials": [trial("dcgan"), trial("dcgan"),
                                                                        trial("dcgan")]}}))
    storage = tmp_path / "searches"
    command = [sys.executable, "-m", "pokegan_ray.cli", "tune", "--storage", str(storage), "--name", "crashed"]
    old_ray = short_temp_dir("rk-")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    driver = subprocess.Popen(command + ["--space", str(space_file), "--data", labelled_data], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**env, "RAY_TMPDIR": old_ray})
    seen = []
    try:
        for line in driver.stdout:
            seen.append(line)
            if "trial 1/3 completed" in line:
                driver.kill()
                break
        driver.wait(timeout=60)
        assert driver.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
        # The report is rewritten as the search goes: the killed driver never reached the search's end.
        assert '<tr data-trial="1">' in (storage / "crashed" / "report.html").read_text()
        ledger = Ledger(location(str(storage / "crashed")))
        finished = ledger.records()[0]
        assert finished.number == 1 and finished.status == COMPLETED
        finished_file = storage / "crashed" / "trials" / f"{finished.trial_id}.json"
        finished_bytes = finished_file.read_bytes()

        resumed = subprocess.run(command + ["--resume"], env=env, text=True, capture_output=True, timeout=600)
        assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    finally:
        stop_processes_under(old_ray)  # what of the killed driver's local Ray outlived it
    records = ledger.records()
    assert finished_file.read_bytes() == finished_bytes  # reported again to Tune, not trained again
    assert all(record.finished for record in records), [(r.number, r.status) for r in records]
    assert sum(record.status == COMPLETED for record in records) == 3
    lost = [record for record in records if record.status == FAILED]
    assert all("lost when the search driver was killed" in record.reason for record in lost)
    assert f"trial 1/3 {finished.trial_id} had completed before the restart" in resumed.stdout
    last_line = resumed.stdout.rstrip().splitlines()[-1]
    assert last_line.split()[:2] == ["report:", str(storage / "crashed" / "report.html")]
    assert len(re.findall(r'<tr data-trial="\d+">', (storage / "crashed" / "report.html").read_text())) == 3


def test_a_search_that_cannot_place_a_trial_says_so_and_stops_after_the_timeout(ray_cluster, labelled_data, tmp_path,
                                                                                capsys):
    from ray.util.placement_group import placement_group, remove_placement_group

    left_behind = placement_group([{"CPU": 1.8}])  # the cluster has 2 CPUs: a 0.5-CPU trial fits it, not now
    assert left_behind.wait(timeout_seconds=60)
    try:
        outcome = run_search(space([trial("dcgan")]), storage_uri=str(tmp_path), name="stuck",
                             data_uri=labelled_data, cluster=ClusterOptions(wait_timeout_s=20))
    finally:
        remove_placement_group(left_behind)
    assert outcome.failure and re.search(r"no trial could start for 2\ds", outcome.failure)
    assert "needs 0.5 CPU" in outcome.failure and "0.2 CPU free" in outcome.failure
    assert outcome.interrupted and "--resume" in outcome.failure
    said = capsys.readouterr().out
    assert re.search(r"the next trial has waited 1\d s for room: it needs 0.5 CPU", said)
    # Stopped like Ctrl+C: with room again, --resume runs the trial that waited.
    resumed = run_search(None, storage_uri=str(tmp_path), name="stuck", resume=True)
    assert [record.status for record in resumed.records] == [COMPLETED] and not resumed.failure


def test_bad_searches_fail_before_ray_tune_starts(ray_cluster, labelled_data, tmp_path):
    with pytest.raises(SearchError, match="train.eval_every is 0"):
        run_search(space([trial("dcgan")]), storage_uri=str(tmp_path), name="a", data_uri=labelled_data,
                   overrides={"train": {"eval_every": 0}})
    with pytest.raises(SearchError, match="--set loss.name is a dimension"):
        run_search(space([trial("dcgan")]), storage_uri=str(tmp_path), name="b", data_uri=labelled_data,
                   overrides={"loss": {"name": "wgan"}})
    with pytest.raises(SearchError, match="needs 2.5 CPU; this Ray cluster has 2 CPU and cannot grow"):
        run_search(space([trial("dcgan")]), storage_uri=str(tmp_path), name="c", data_uri=labelled_data,
                   overrides={"scale": {"cpus_per_worker": 2.5}})
    with pytest.raises(SearchError, match=r"first trial needs 1 CPU, 0.25 GPU; this Ray cluster has 2 CPU and cannot"):
        run_search(SearchSpace.load(str(SPACES / "default.yaml")), storage_uri=str(tmp_path), name="gpu",
                   data_uri=labelled_data)  # a GPU cluster's space on this 2-CPU cluster
    mutable = {**DIMENSIONS, "loss.generator_learning_rate": {**DIMENSIONS["loss.generator_learning_rate"],
                                                              "mutable": True}}

    def pbt(**search):
        return SearchSpace.from_dict({"description": "pbt", "base": BASE, "dimensions": mutable,
                                      "search": {"scheduler": "pbt", **search}}, "pbt")

    with pytest.raises(SearchError, match=r"perturbation_interval to a multiple of it \(40 now\), all in images"):
        run_search(pbt(perturbation_interval=RUNG_IMAGES + 8), storage_uri=str(tmp_path), name="d",
                   data_uri=labelled_data)
    with pytest.raises(SearchError, match=r"set search.concurrent to at least search.samples \(3\)"):
        run_search(pbt(samples=3, concurrent=2), storage_uri=str(tmp_path), name="e", data_uri=labelled_data)
    with pytest.raises(SearchError, match="no search 'missing'"):
        run_search(None, storage_uri=str(tmp_path), name="missing", resume=True)
    assert not list(Path(tmp_path).glob("*/search.json"))  # nothing was started


def test_first_trials_must_name_dimensions_with_values_they_can_take():
    with pytest.raises(ValueError, match="'loss.nam' is not a dimension"):
        space([{"loss.nam": "dcgan"}])
    with pytest.raises(ValueError, match="loss.name='wgan' is not one of"):
        space([{"loss.name": "wgan"}])
    with pytest.raises(ValueError, match="from 1e-05 to 0.3"):
        space([{"loss.generator_learning_rate": 1.0}])
    with pytest.raises(ValueError, match="search: unknown key"):
        SearchSpace.from_dict({"base": BASE, "dimensions": DIMENSIONS, "search": {"sample": 3}})


def test_cli_tune_rejects_bad_input_with_one_line(tmp_path, capsys):
    assert cli.main(["tune"]) == 2
    assert "--space is required" in capsys.readouterr().err
    assert cli.main(["tune", "--space", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the search space" in capsys.readouterr().err
    assert cli.main(["tune", "--resume"]) == 2
    assert "--resume needs the search's --name" in capsys.readouterr().err
    assert cli.main(["tune", "--space", str(SPACES / "quick.yaml"), "--samples", "0"]) == 2
    assert "--samples must be at least 1" in capsys.readouterr().err


def test_replaying_recorded_curves_stops_what_the_searchs_asha_would_and_counts_the_compute():
    """Nine recorded curves through the search's own ASHA (reduction factor 3): arriving best first, each
    later trial is worse at the first rung than all before it and is cut there; arriving worst first, each
    is the best so far and goes on. The trial that would have ended best is the one cut last."""
    from pokegan_ray.search.replay import replay_asha

    curves = [{"rungs": [{"step": rung, "images_seen": RUNG_IMAGES * rung, "fid": 100.0 + index + rung}
                         for rung in (1, 2, 3)],
               "final_fid": 200.0 - 10 * index} for index in range(9)]
    best_first = replay_asha(curves, signal="fid", grace=RUNG_IMAGES, reduction_factor=3)
    assert best_first.stopped == tuple(range(1, 9))
    assert best_first.images_with == 3 * RUNG_IMAGES + 8 * RUNG_IMAGES  # one whole trial, eight first rungs
    assert best_first.compute_ratio == pytest.approx(11 / 27)
    assert (best_first.best_final_with, best_first.best_final_without) == (200.0, 120.0)
    worst_first = replay_asha(curves, signal="fid", grace=RUNG_IMAGES, reduction_factor=3, order=range(8, -1, -1))
    assert worst_first.stopped == () and worst_first.compute_ratio == 1.0 and worst_first.fid_gap == 0.0
    with pytest.raises(ValueError, match="rungs lack 'kid'"):
        replay_asha(curves, signal="kid", grace=RUNG_IMAGES, reduction_factor=3)
