"""What pokegan shows while it works: its own progress, with Ray's, Ray Data's, Tune's and Optuna's chatter
kept out of the way.

On a terminal (stdout is a TTY) progress is drawn in place with rich: a bar for each of `prepare`'s stages
(files scanned, rows built), a bar for a training run (steps, images/s, last FID, ETA) and a live table of a
search, one row per trial. Whatever else is printed meanwhile (a warning, a worker's line) appears above
them. Not on a terminal (CI, cron, `ray job logs`) the same progress comes as plain `[pokegan] ...` lines,
one per event, with no control characters; rich is not even imported then.

rich rather than tqdm: a search's view is a table whose rows change in place, which rich draws (and
redraws under lines printed from other threads, such as Ray's forwarding of worker output) and tqdm does
not; and tqdm writes carriage-return updates into a log that is not a terminal unless each bar is told
not to, where here a plain line is simply printed instead.

Ray's own logging is kept from the terminal unless `pokegan -v`, and stays in Ray's log files (the
session's `logs/` folder: ray-data.log, Ray Train's logs, each worker's output): `quiet_environment` for
this process and the Ray processes it starts, `worker_setup` in every Ray worker of the job, and
`keep_forwarded_line` for what Ray forwards to the driver. Warnings and errors still reach the user.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
import warnings
from typing import Any, Callable

PREFIX = "[pokegan] "
# Ray Data's console logging with its INFO lines and progress-bar notices kept out (see the file).
RAY_DATA_LOGGING_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_data_logging.yaml")


def interactive() -> bool:
    """Whether stdout is a terminal that progress can be drawn on in place."""
    try:
        return sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # a replaced or closed stdout
        return False


def verbose() -> bool:
    """`pokegan -v`: the root logger at DEBUG (then Ray's and Optuna's own output is shown too)."""
    return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def say(line: str) -> None:
    """One line of pokegan's own on stdout (above any progress drawn there)."""
    sys.stdout.write(f"{PREFIX}{line}\n")
    sys.stdout.flush()


# -- keeping other libraries' output out of the way ----------------------------------------------------
class StderrNow(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record comes (a live view redirects it above
    itself; a handler holding the stream it was made with would write through the view)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it
        pass


def setup_logging(is_verbose: bool) -> None:
    """pokegan's log lines, `[pokegan] ...` on stderr, and the environment that keeps Ray's out of the way."""
    handler = StderrNow()
    handler.setFormatter(logging.Formatter(f"{PREFIX}%(message)s"))
    logging.basicConfig(level=logging.DEBUG if is_verbose else logging.INFO, handlers=[handler])
    # Ray and its dependencies log at INFO through the root logger; keep our lines readable.
    for noisy in ("ray", "urllib3", "botocore", "s3fs", "fsspec", "filelock", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow prints a link to each run it ends; `--mlflow` runs print their own.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    quiet_environment(is_verbose)


def quiet_environment(is_verbose: bool) -> None:
    """Settings read when Ray's libraries are imported, so set before they are (in `main`); a local Ray that
    pokegan starts inherits them."""
    # Ray Data's progress bars (and, when stdout is not a terminal, their logged form) are replaced by ours.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if is_verbose:
        return
    # Tune's own output (a configuration box, "View detailed results here", a TensorBoard hint into Ray's
    # session folder) repeats or contradicts what pokegan prints; its legacy engine at verbose=0 is silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's hints that one of its loop's steps took over half a second (a busy machine) are for Tune's authors.
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "3600")
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", RAY_DATA_LOGGING_CONFIG)
    # Ray's deprecation notices about its own internal settings are not the user's to act on.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
    # Tune's advice to PBT users that pokegan has taken care of: it hands each copied checkpoint over itself
    # (SEARCH/handoffs/), so Tune deleting its own early does no harm; and a trial restarts in a fresh process.
    for advice in ("Using `CheckpointConfig.num_to_keep <= 2` with PBT", "Consider boosting PBT performance"):
        warnings.filterwarnings("ignore", message=re.escape(advice), category=UserWarning, module=r"ray\.tune")
    if not os.environ.get("RAY_ADDRESS"):
        # The local Ray pokegan starts turns token authentication on and warns that it did, on every command.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def worker_setup() -> None:
    """Run by Ray in every worker process of a pokegan job (`worker_process_setup_hook`, see
    `cluster.ray_init_arguments`): the same quiet as the driver's, for the Ray libraries that run there (Ray
    Data's executor inside Ray Train's actors, for one). On another node this package's own copy of the Ray
    Data logging config is used."""
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", RAY_DATA_LOGGING_CONFIG)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")


class RayDataNoticeFilter(logging.Filter):
    """Ray Data's notices about its progress bars (that they are off, that a new UI exists, that progress is
    logged instead): pokegan draws its own. Named in ray_data_logging.yaml."""

    NOTICES = ("Progress bars disabled", "Progress bars for operators disabled", "[dataset]: A new progress UI",
               "Progress will be logged because stdout")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


# What Ray forwards to the driver that is noise on a healthy run, with whose output it comes ("gcs_server",
# "raylet", or any process: None) and a piece of the line.
FORWARDED_NOISE = (
    # The GCS failing to kill an actor whose process has already exited (the RPC finds its socket closed):
    # it happens as Ray Train and Tune tear down their actors at the end of every run and trial.
    ("gcs_server", "Failed to kill actor"),
    # Ray's core worker telling Ray Train that its own preemption watcher actor is restartable.
    (None, "has constructor arguments in the object store and max_restarts > 0"),
)


def keep_forwarded_line(source: Any, line: str) -> bool:
    """Whether a line Ray forwards to the driver from `source` (its "pid": a number, "gcs_server",
    "raylet", "autoscaler") reaches the terminal. A worker's own errors always do."""
    return not any((expected is None or source == expected) and text in line for expected, text in FORWARDED_NOISE)


# -- progress ----------------------------------------------------------------------------------------------
def _console(console=None):
    if console is not None:
        return console
    from rich.console import Console

    return Console()


def _redirects() -> dict[str, bool]:
    """What a live view takes over: stdout, where it draws; stderr only when that is the terminal too (`2>file`
    keeps the log lines in the file)."""
    try:
        stderr_on_terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):
        stderr_on_terminal = False
    return {"redirect_stdout": True, "redirect_stderr": stderr_on_terminal}


class _Poller:
    """Calls `poll` every `interval` seconds in a daemon thread until stopped (then once more)."""

    def __init__(self, poll: Callable[[], None], interval: float):
        self.poll, self.interval = poll, interval
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pokegan-progress", daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            self._poll_once()

    def _poll_once(self) -> None:
        try:
            self.poll()
        except Exception as error:  # noqa: BLE001 - progress is a view: never a reason to fail the job
            logging.getLogger(__name__).debug("progress poll failed: %s", error)

    def start(self) -> "_Poller":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        self._poll_once()


class Counter:
    """Progress of one stage towards a known total (`prepare`'s files scanned, rows built): a bar on a
    terminal, else a plain line at each quarter. `advance` may be called from any thread."""

    def __init__(self, stage: str, total: int, unit: str, console=None, live: bool | None = None):
        self.stage, self.total, self.unit = stage, max(int(total), 0), unit
        self.live = interactive() if live is None else live
        self.console = console
        self.count = 0
        self._quarters_said = 0
        self._lock = threading.Lock()
        self._progress = None

    def __enter__(self) -> "Counter":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._progress = Progress(TextColumn(f"{PREFIX}{self.stage}", markup=False), BarColumn(),
                                      MofNCompleteColumn(), TextColumn(self.unit), TimeElapsedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(), console=_console(self.console),
                                      **_redirects())
            self._task = self._progress.add_task(self.stage, total=self.total or None)
            self._progress.start()
        return self

    def set(self, count: int) -> None:
        with self._lock:
            self.count = min(max(int(count), self.count), self.total)
            if self._progress is not None:
                self._progress.update(self._task, completed=self.count)
                return
            quarters = 4 * self.count // self.total if self.total else 0
            if quarters > self._quarters_said:
                self._quarters_said = quarters
                say(f"{self.stage}: {self.count:,}/{self.total:,} {self.unit} ({100 * self.count // self.total}%)")

    def advance(self, amount: int) -> None:
        self.set(self.count + amount)

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()


# -- a training run -------------------------------------------------------------------------------------------
def training_line(progress: dict[str, Any], eta: str = "") -> str:
    """A training run's report as one plain line (what a run's rank 0 writes to `progress.json`)."""
    fid = progress.get("last_fid")
    fid_text = f" | FID {fid:.1f} (N={progress.get('eval_images')})" if fid is not None else ""
    return (f"step {progress['step']}/{progress['total_steps']} | images {int(progress['images_seen']):,} | "
            f"epoch {progress.get('epoch', 0)} | D {progress.get('d_loss', math.nan):.3f} "
            f"G {progress.get('g_loss', math.nan):.3f} | D acc real {progress.get('d_accuracy_real', 0):.2f} "
            f"fake {progress.get('d_accuracy_fake', 0):.2f} | {progress.get('images_per_second', 0):.0f} img/s"
            f"{fid_text}{f' | ETA {eta}' if eta else ''}")


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 125 -> '2m05s', 42 -> '42s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class TrainingView:
    """A training run's progress as its rank 0 reports it (`read()`: the run's `progress.json`, or None
    before the first report), polled from here so it works wherever the run folder is (S3 included).
    On a terminal a bar (steps, images, images/s, last FID, ETA); else one plain line per report seen."""

    def __init__(self, read: Callable[[], dict[str, Any] | None], total_steps: int, interval: float = 2.0,
                 console=None, live: bool | None = None):
        self.read, self.total_steps, self.interval = read, total_steps, interval
        self.live = interactive() if live is None else live
        self.console = console
        self.last: dict[str, Any] | None = None
        self.started = time.time()
        self._first: tuple[float, int] | None = None  # (time, step) of the first report seen since started
        self._progress = None
        self._poller: _Poller | None = None

    def __enter__(self) -> "TrainingView":
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn(f"{PREFIX}step {{task.completed:,.0f}}/{{task.total:,.0f}}", markup=False), BarColumn(),
                TextColumn("{task.fields[images]} images  {task.fields[rate]} img/s  {task.fields[fid]}  "
                           "ETA {task.fields[eta]}"), console=_console(self.console), **_redirects())
            self._task = self._progress.add_task("train", total=self.total_steps, images="0", rate="-", fid="FID -",
                                                 eta="-")
            self._progress.start()
        self._poller = _Poller(self.poll, self.interval).start()
        return self

    def poll(self) -> None:
        progress = self.read()
        if progress:
            self.update(progress)

    def update(self, progress: dict[str, Any]) -> None:
        """Show a report (once: one already shown changes nothing)."""
        if self.last is not None and (progress.get("step"), progress.get("time")) == \
                (self.last.get("step"), self.last.get("time")):
            return
        self.last = progress
        eta = self._eta(progress)
        if self._progress is None:
            say(training_line(progress, eta))
            return
        fid = progress.get("last_fid")
        self._progress.update(self._task, completed=progress["step"], total=progress.get("total_steps"),
                              images=f"{int(progress['images_seen']):,}",
                              rate=f"{progress.get('images_per_second', 0):.0f}",
                              fid=f"FID {fid:.1f}" if fid is not None else "FID -", eta=eta or "-")

    def _eta(self, progress: dict[str, Any]) -> str:
        """From the reports seen by this view (their own clock): the time left at the pace since the first."""
        now, step = float(progress.get("time", time.time())), int(progress["step"])
        if now < self.started:  # a report from before this view (a restart's last one): no pace yet
            return ""
        if self._first is None or step < self._first[1]:
            self._first = (now, step)
        first_time, first_step = self._first
        if step <= first_step or now <= first_time:
            return ""
        left = int(progress.get("total_steps", self.total_steps)) - step
        return duration(max(0, left) * (now - first_time) / (step - first_step))

    def __exit__(self, *exc_info) -> None:
        if self._poller is not None:
            self._poller.stop()
        if self._progress is not None:
            self._progress.stop()


# -- a search -------------------------------------------------------------------------------------------------
STATUS_STYLES = {"running": "cyan", "completed": "green", "stopped": "yellow", "failed": "red"}


def short_name(dimension: str) -> str:
    """`loss.generator_learning_rate` -> `generator_learning_rate`; `loss.name` -> `loss`."""
    section, _, key = dimension.partition(".")
    return section if key == "name" or not key else key


def value_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class SearchView:
    """A search's trials: on a terminal a table refreshed in place, one row per trial (number, status, the
    params on which the trials differ, images seen, best score, why it stopped); else the line each trial
    event comes with, printed as it is.

    Rows come from the search's ledger records (`show`); a running trial's images seen are polled from its
    run's `progress.json` (`read(run_uri)`) between its evaluations.
    """

    def __init__(self, title: str, samples: int, signal_label: str, signal: str = "fid",
                 read: Callable[[str], dict[str, Any] | None] | None = None, length_images: int | None = None,
                 interval: float = 2.0, console=None, live: bool | None = None):
        self.title, self.samples, self.signal_label, self.signal = title, samples, signal_label, signal
        self.read, self.length_images, self.interval = read, length_images, interval
        self.live = interactive() if live is None else live
        self.console = console
        self.rows: dict[int, Any] = {}  # number -> the trial's ledger record
        self.images_now: dict[int, int] = {}  # number -> images seen by a running trial, from its progress.json
        self._lock = threading.Lock()
        self._live = None
        self._poller: _Poller | None = None

    active: "SearchView | None" = None  # the view `show_trial` shows through (one search at a time)

    def __enter__(self) -> "SearchView":
        SearchView.active = self
        if self.live:
            from rich.live import Live

            self._live = Live(console=_console(self.console), get_renderable=self.table, refresh_per_second=2,
                              **_redirects())
            self._live.start()
            if self.read is not None:
                self._poller = _Poller(self.poll, self.interval).start()
        return self

    def show(self, record, line: str, note: bool = False) -> None:
        """A trial event: its ledger record as it is now, and the line that says what happened (on a terminal
        too when it is a `note`: what a row cannot show, such as a restart)."""
        if self._live is None or note:
            say(line)  # on a terminal: above the table
        if self._live is None:
            return
        with self._lock:
            self.rows[record.number] = record
            if record.finished:
                self.images_now.pop(record.number, None)
        self._live.refresh()

    def preload(self, records) -> None:
        """The trials a resumed search already has (no lines: they are in the leaderboard)."""
        if self._live is not None:
            with self._lock:
                self.rows.update({record.number: record for record in records})

    def poll(self) -> None:
        with self._lock:
            running = [(number, record.run_uri) for number, record in self.rows.items() if not record.finished]
        for number, run_uri in running:
            progress = self.read(run_uri) if run_uri else None
            if progress:
                with self._lock:
                    self.images_now[number] = int(progress["images_seen"])

    def table(self):
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            records = [self.rows[number] for number in sorted(self.rows)]
            images_now = dict(self.images_now)
        done = sum(record.finished for record in records)
        running = len(records) - done
        table = Table(title=Text(f"{PREFIX}{self.title}: {done}/{self.samples} trials done, {running} running"),
                      title_justify="left", expand=False, box=None, header_style="bold", pad_edge=False)
        for name, justify in (("#", "right"), ("status", "left"), ("params", "left"), ("images", "right"),
                              (f"best {self.signal_label}", "right"), ("", "left")):
            table.add_column(name, justify=justify, overflow="fold")
        differing = differing_params(records)
        shown = self._fitting(records)
        for record in shown:
            images = max(record.images_seen, images_now.get(record.number, 0))
            images_text = f"{images:,}" + (f"/{self.length_images:,}" if self.length_images else "")
            best = best_score(record, self.signal)
            table.add_row(str(record.number), Text(record.status, style=STATUS_STYLES.get(record.status, "")),
                          " ".join(f"{short_name(name)}={value_text(record.params[name])}"
                                   for name in differing if name in record.params),
                          images_text, "-" if not math.isfinite(best) else
                          (f"{best:.4f}" if abs(best) < 10 else f"{best:.1f}"), record.reason)
        if len(shown) < len(records):
            table.caption = f"{len(records) - len(shown)} finished trials not shown: see the leaderboard at the end"
            table.caption_justify = "left"
        return table

    def _fitting(self, records: list) -> list:
        """Every row, or on a short terminal the running ones and the latest finished ones that fit."""
        room = max(5, (self._live.console.size.height if self._live is not None else 40) - 6)
        if len(records) <= room:
            return records
        running = [record for record in records if not record.finished]
        finished = [record for record in records if record.finished][-max(0, room - len(running)):]
        return sorted(running + finished, key=lambda record: record.number)

    def __exit__(self, *exc_info) -> None:
        SearchView.active = None
        if self._poller is not None:
            self._poller.stop()
        if self._live is not None:
            self._live.stop()


def show_trial(record, line: str, note: bool = False) -> None:
    """A search's trial event (its ledger record now, and the line that says what happened) through the
    search's view (see `SearchView.show`); without one, the line. Looked up when called: Tune restores a
    resumed search's callback from its saved state, where no view could be kept."""
    view = SearchView.active
    if view is None:
        say(line)
    else:
        view.show(record, line, note=note)


def differing_params(records: list) -> list[str]:
    """The dimensions whose values are not the same in every trial (all of them while there is one trial),
    in the order the trials name them."""
    names: list[str] = []
    for record in records:
        names += [name for name in record.params if name not in names]
    if len(records) < 2:
        return names
    missing = object()
    return [name for name in names if len({repr(record.params.get(name, missing)) for record in records}) > 1]


def best_score(record, signal: str) -> float:
    """The lowest value of the search's signal a trial reported (inf before its first evaluation)."""
    values = [float(entry.get(signal, math.inf)) for entry in record.history]
    finite = [value for value in values if math.isfinite(value)]
    return min(finite) if finite else math.inf


def progress_reader(file_name: str = "progress.json") -> Callable[[str], dict[str, Any] | None]:
    """read(run_uri): the run's latest progress report, or None while it has none (or it cannot be read)."""
    import json

    from pokegan_ray.storage import StorageError, location

    def read(run_uri: str) -> dict[str, Any] | None:
        try:
            return json.loads(location(run_uri).join(file_name).read_bytes())
        except (StorageError, ValueError):
            return None

    return read

