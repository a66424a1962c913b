"""What pokegan shows while it works (pokegan_ray/terminal.py): a live view on a terminal, plain lines
elsewhere, and Ray's own chatter kept out of the way. Fast: no Ray cluster."""

from __future__ import annotations

import io
import logging
import math
import os
import warnings

import pytest

from pokegan_ray import ray_compat, terminal
from pokegan_ray.search.ledger import COMPLETED, RUNNING, STOPPED, TrialRecord


def record(number: int, status: str = RUNNING, history=(), reason: str = "", **params) -> TrialRecord:
    params = {"loss.name": "hinge", "loss.generator_learning_rate": 2.0e-4, "train.batch_size": 32, **params}
    return TrialRecord(trial_id=f"t{number}", number=number, params=params, run_uri=f"/runs/t{number}",
                       status=status, reason=reason, history=list(history))


def evaluation(images: int, fid: float) -> dict:
    return {"step": images // 32, "images_seen": images, "fid": fid, "kid": fid / 1000, "fid_infinity": fid - 5}


def terminal_console(height: int = 30):
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=True, width=160, height=height, color_system=None)


def rendered(renderable) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(renderable)
    return console.export_text()


FAST = {"loss.generator_learning_rate": 1.0e-3}
EVENTS = [
    (record(1), "trial 1/2 t1 started: loss.name=hinge"),
    (record(2, **FAST), "trial 2/2 t2 started: loss.name=hinge"),
    (record(1, history=[evaluation(2400, 312.4)]), "trial 1/2 step 75: FID 312.4 (best 312.4) after 2,400 images"),
    (record(2, STOPPED, [evaluation(2400, 390.0)], "stopped early by the ASHA scheduler at step 75", **FAST),
     "trial 2/2 stopped: best FID 390.0 after 2,400 images (stopped early by the ASHA scheduler at step 75)"),
    (record(1, COMPLETED, [evaluation(2400, 312.4), evaluation(9600, 280.1)]),
     "trial 1/2 completed: best FID 280.1 after 9,600 images"),
]


def test_a_search_off_a_terminal_says_each_trial_event_as_one_plain_line(capsys):
    with terminal.SearchView("search s", samples=2, signal_label="FID", live=False):
        for trial, line in EVENTS:
            terminal.show_trial(trial, line)
    out = capsys.readouterr().out
    assert out.splitlines() == [f"[pokegan] {line}" for _, line in EVENTS]
    assert "\x1b" not in out and "\r" not in out  # no control characters in a log
    terminal.show_trial(*EVENTS[0])  # no search under way: the line all the same
    assert capsys.readouterr().out == f"[pokegan] {EVENTS[0][1]}\n"


def test_a_search_on_a_terminal_is_one_row_per_trial_refreshed_in_place():
    console = terminal_console()
    reads = []

    def read(run_uri):
        reads.append(run_uri)
        return {"images_seen": 4800}

    view = terminal.SearchView("search s", samples=2, signal_label="FID", read=read, length_images=9600,
                               interval=0.05, console=console, live=True)
    with view:
        for trial, line in EVENTS[:2]:
            terminal.show_trial(trial, line)
        view.poll()  # what the poller does every few seconds: a running trial's images between evaluations
        running = rendered(view.table())
        for trial, line in EVENTS[2:]:
            terminal.show_trial(trial, line)
        finished = rendered(view.table())
    drawn = console.file.getvalue()
    assert not any(line in drawn for _, line in EVENTS)  # rows, not the events' lines
    assert "\x1b[" in drawn  # redrawn in place: cursor movements
    assert set(reads) >= {"/runs/t1", "/runs/t2"}

    assert "2 running" in running and "4,800/9,600" in running
    rows = [line.split() for line in finished.splitlines() if line.strip()[:1].isdigit()]
    assert [row[:2] for row in rows] == [["1", "completed"], ["2", "stopped"]]
    # Only the params on which the trials differ, short; the best score; why a trial stopped.
    assert "generator_learning_rate=0.0002" in finished and "generator_learning_rate=0.001" in finished
    assert "batch_size" not in finished and "loss=hinge" not in finished
    assert "9,600/9,600" in finished and "280.1" in finished and "390.0" in finished
    assert "stopped early by the ASHA scheduler" in finished
    assert "[pokegan] search s: 2/2 trials done, 0 running" in finished


def test_a_search_on_a_short_terminal_keeps_the_running_trials_in_view():
    view = terminal.SearchView("search s", samples=30, signal_label="KID", signal="kid",
                               console=terminal_console(height=12), live=True)
    with view:
        for number in range(1, 21):
            status = RUNNING if number in (3, 20) else COMPLETED
            terminal.show_trial(record(number, status, [evaluation(2400, 300.0 + number)]), "event")
        table = rendered(view.table())
    numbers = [int(line.split()[0]) for line in table.splitlines() if line.split()[1:2] in (["running"],
                                                                                           ["completed"])]
    assert 3 in numbers and 20 in numbers and len(numbers) == 6
    assert "14 finished trials not shown" in table
    assert "0.3030" in table  # the search's own signal: KID


def report(step: int, seconds: float, fid: float | None = None) -> dict:
    return {"step": step, "total_steps": 10, "images_seen": step * 64, "epoch": 0, "images_per_second": 64.0,
            "d_loss": 1.2, "g_loss": 0.7, "d_accuracy_real": 0.5, "d_accuracy_fake": 0.5, "last_fid": fid,
            "eval_images": 256, "time": 2_000_000_000 + seconds}


def test_a_training_run_off_a_terminal_is_a_line_per_report_with_its_eta(capsys):
    with terminal.TrainingView(lambda: None, total_steps=10, live=False) as view:
        view.started = 0  # reports from this view's time on
        view.update(report(2, 0.0))
        view.update(report(2, 0.0))  # the same report polled again
        view.update(report(4, 20.0, fid=312.4))
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[pokegan] step 2/10 | images 128 | epoch 0 | D 1.200 G 0.700 | D acc real 0.50 fake 0.50 | "
                     "64 img/s",
                     "[pokegan] step 4/10 | images 256 | epoch 0 | D 1.200 G 0.700 | D acc real 0.50 fake 0.50 | "
                     "64 img/s | FID 312.4 (N=256) | ETA 1m00s"]


def test_a_training_run_on_a_terminal_is_a_bar_read_from_the_run_folder():
    console = terminal_console()
    reports = iter([None, report(2, 0.0), report(4, 20.0, fid=312.4)])
    view = terminal.TrainingView(lambda: next(reports, report(4, 20.0, fid=312.4)), total_steps=10, interval=0.01,
                                 console=console, live=True)
    view.started = 0
    with view:
        view.poll(), view.poll(), view.poll()
    drawn = console.file.getvalue()
    assert "step 4/10" in drawn and "256 images" in drawn and "FID 312.4" in drawn and "ETA 1m00s" in drawn
    assert "[pokegan] step 4/10 | images" not in drawn  # the bar, not the plain line


def test_a_stage_off_a_terminal_is_a_line_at_each_quarter(capsys):
    with terminal.Counter("scan", 1008, "files", live=False) as counter:
        for _ in range(1008 // 36):
            counter.advance(36)
    assert capsys.readouterr().out.splitlines() == [
        "[pokegan] scan: 252/1,008 files (25%)", "[pokegan] scan: 504/1,008 files (50%)",
        "[pokegan] scan: 756/1,008 files (75%)", "[pokegan] scan: 1,008/1,008 files (100%)"]
    console = terminal_console()
    with terminal.Counter("build", 100, "rows", console=console, live=True) as counter:
        counter.set(60)
    assert "build" in console.file.getvalue() and "60/100" in console.file.getvalue()


def test_the_driver_drops_rays_harmless_gcs_lines_but_not_a_workers_errors(capsys):
    """Ray forwards the GCS's error file to the driver; "Failed to kill actor" there is the GCS tearing down
    actors whose processes had already exited, after every run and trial. A worker's lines always pass."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed = []
    saved = list(dispatcher.handlers)
    dispatcher.handlers = [(name, handler) for name, handler in saved if name != ray_compat.DRIVER_LOG_HANDLER]
    dispatcher.add_handler(ray_compat.DRIVER_LOG_HANDLER, lambda data: printed.append(data))
    try:
        assert ray_compat.filter_forwarded_logs(terminal.keep_forwarded_line)
        assert ray_compat.filter_forwarded_logs(terminal.keep_forwarded_line)  # once is enough: not twice wrapped
        gcs = ("[2026-12-03 15:38:54,864 E 2969 2969] (gcs_server) gcs_actor_scheduler.cc:538: Failed to kill actor "
               "NIL_ID, return status: Invalid: KillActor RPC failed: RPC error: Socket closed rpc_code: 14")
        other_gcs = "[2026-12-03 15:38:55,001 E 2969 2969] (gcs_server) gcs_server.cc:1: the GCS lost its storage"
        dispatcher.emit({"pid": "gcs_server", "is_err": True, "lines": [gcs, other_gcs]})
        dispatcher.emit({"pid": "gcs_server", "is_err": True, "lines": [gcs]})
        worker = "ValueError: Failed to kill actor in my own code"
        dispatcher.emit({"pid": 4242, "is_err": True, "lines": [worker]})
    finally:
        dispatcher.handlers = saved
    assert [data["lines"] for data in printed] == [[other_gcs], [worker]]


def test_ray_datas_console_keeps_its_warnings_and_drops_its_info_and_progress_bar_notices(monkeypatch, capsys):
    from ray.data._internal import logging as ray_data_logging

    logger = logging.getLogger("ray.data._internal.execution.streaming_executor")
    ray_data = logging.getLogger("ray.data")
    saved = list(ray_data.handlers), ray_data.level, ray_data.propagate
    monkeypatch.setenv("RAY_DATA_LOGGING_CONFIG", terminal.RAY_DATA_LOGGING_CONFIG)
    try:
        ray_data_logging.configure_logging()  # as `import ray.data` does, with pokegan's config
        logger.info("Starting execution of Dataset train_1_0")
        logger.warning("Progress bars disabled. To enable, set `ray.data.DataContext.get_current()...`")
        logger.warning("a real warning from Ray Data")
        levels = {handler.name: handler.level for handler in ray_data.handlers}
    finally:
        # Ray Data's own handlers back (the ones made here write to this test's captured stderr, closed after it).
        ray_data.handlers[:] = saved[0]
        ray_data.setLevel(saved[1])
        ray_data.propagate = saved[2]
    said = capsys.readouterr().err
    assert "a real warning from Ray Data" in said
    assert "Starting execution" not in said and "Progress bars disabled" not in said
    assert levels == {"file": logging.NOTSET, "console": logging.WARNING}  # the log file still gets everything


def test_quiet_unless_verbose(monkeypatch):
    for name in ("RAY_AIR_NEW_OUTPUT", "TUNE_WARN_THRESHOLD_S", "RAY_DATA_LOGGING_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    def shown(message: str, category, module: str) -> bool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn_explicit(message, category, f"/site-packages/{module.replace('.', '/')}.py", 1, module)
        return bool(caught)

    pbt_advice = "Using `CheckpointConfig.num_to_keep <= 2` with PBT can lead to restoration problems"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        terminal.quiet_environment(is_verbose=True)
        assert "RAY_DATA_LOGGING_CONFIG" not in os.environ and "RAY_AIR_NEW_OUTPUT" not in os.environ
        assert shown(pbt_advice, UserWarning, "ray.tune.schedulers.pbt")
        terminal.quiet_environment(is_verbose=False)
        assert os.environ["RAY_DATA_LOGGING_CONFIG"] == terminal.RAY_DATA_LOGGING_CONFIG
        assert os.path.exists(terminal.RAY_DATA_LOGGING_CONFIG)
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0" and float(os.environ["TUNE_WARN_THRESHOLD_S"]) >= 60
        assert not shown(pbt_advice, UserWarning, "ray.tune.schedulers.pbt")
        assert not shown("`ExecutionOptions.exclude_resources` is deprecated", DeprecationWarning,
                         "ray.data._internal.execution.interfaces.execution_options")
        assert shown("a warning of pokegan's own", UserWarning, "pokegan_ray.training.loop")
    # In each Ray worker of the job, on whichever node (`worker_process_setup_hook`): Ray Data's config from there.
    monkeypatch.delenv("RAY_DATA_LOGGING_CONFIG")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        terminal.worker_setup()
        assert os.environ["RAY_DATA_LOGGING_CONFIG"] == terminal.RAY_DATA_LOGGING_CONFIG
        assert not shown("`ExecutionOptions.exclude_resources` is deprecated", DeprecationWarning,
                         "ray.data._internal.execution.interfaces.execution_options")


@pytest.mark.parametrize("signal, expected", [("fid", 280.1), ("kid", 0.2801)])
def test_best_score_is_the_searchs_signal(signal, expected):
    trial = record(1, history=[evaluation(2400, 312.4), evaluation(4800, 280.1), {"step": 3, "images_seen": 1}])
    assert terminal.best_score(trial, signal) == pytest.approx(expected)
    assert terminal.best_score(record(2), "fid") == math.inf
