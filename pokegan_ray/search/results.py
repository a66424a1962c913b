"""What a finished search leaves behind, next to its trials:

    SEARCH/leaderboard.csv      every trial, best first: status, reason, best FID, KID, images seen, params
    SEARCH/best_config.yaml     the best trial's resolved config: `pokegan train --config` takes it
    SEARCH/best_samples.png     a sample grid from the best trial's best checkpoint
    SEARCH/fid_vs_images.png    FID (and the rung signal, when not FID) over the search's compute unit, per trial
    SEARCH/summary.json         the best trial, its FID and checkpoint URI, the rung signal and unit
    SEARCH/report.html          all of it on one self-contained page (pokegan_ray.report), rewritten as the search
                                goes (SearchReport) and once more at its end

Trials are ranked at equal compute, as the search's rungs compared them: those that went further first
(every completed trial above every trial stopped early, a later rung above an earlier one), then by the FID
of their last evaluation, what the trial's config became. Not by a trial's best FID: the minimum of many
noisy evaluations rewards luck and early samples that training went past (over 18 recorded quick.yaml
curves it picked the trial whose final FID at N=1008 was 3rd worst, 441.5; the last evaluation picked the
best, 306.7). The best checkpoint *within* the chosen trial is still its best-scoring one. The search's
rungs, plateau stopper and Optuna use its signal (search.signal), which every file names with its unit.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from typing import Any

import yaml
from PIL import Image

from pokegan_ray import report
from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.search.ledger import FAILED, TrialRecord
from pokegan_ray.search.runner import TIME_ATTRIBUTES
from pokegan_ray.search.space import SearchSpace
from pokegan_ray.storage import Location, StorageError, location
from pokegan_ray.training.trainer import CONFIG_FILE

log = logging.getLogger(__name__)

LEADERBOARD_FILE = "leaderboard.csv"
BEST_CONFIG_FILE = "best_config.yaml"
BEST_SAMPLES_FILE = "best_samples.png"
PLOT_FILE = "fid_vs_images.png"
SUMMARY_FILE = "summary.json"
REPORT_FILE = report.REPORT_FILE
# A search's compute unit (the base config's train.unit) in words; its ledger key is runner.TIME_ATTRIBUTES'.
UNIT_WORDS = {"steps": "generator steps", "images": "real images seen"}
RANKING = "ranked at equal compute: furthest first, then by the FID of the last evaluation"


def compared_at(space: SearchSpace, unit: str) -> str:
    """`rungs compare KID at equal real images seen`: what the search's decisions compared, for people."""
    return f"rungs compare {SIGNALS[space.settings.signal]} at equal {UNIT_WORDS[unit]}"


def ranked(records: list[TrialRecord]) -> list[TrialRecord]:
    """The search's result, best first, at equal compute (see the module's docstring): the trials with more
    evaluations first (every trial evaluates at the same train.eval_every, so that is the rung it reached:
    trials of different batch sizes or critic steps count as equal there even when their images seen differ
    by a batch), then the lower FID at their last evaluation; failed trials and trials without an FID last,
    in trial order."""
    def key(record: TrialRecord):
        scored = record.scored
        if record.status == FAILED or not scored:
            return (True, 0, math.inf, record.number)
        return (False, -len(scored), scored[-1]["fid"], record.number)

    return sorted(records, key=key)


def best_trial(records: list[TrialRecord]) -> TrialRecord | None:
    usable = [record for record in records if record.status != FAILED and record.last is not None]
    return ranked(usable)[0] if usable else None


def leaderboard_csv(records: list[TrialRecord], space: SearchSpace, unit: str = "steps") -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "trial", "trial_id", "status", "last_fid", "last_kid", "last_fid_infinity", "best_fid",
                     "images_seen", "step", "rung_signal", "rung_unit", *space.dimension_names, "reason", "run_uri"])
    for rank, record in enumerate(ranked(records), start=1):
        last = record.last or {}
        writer.writerow([rank, record.number, record.trial_id, record.status, _number(record.last_fid),
                         _number(last.get("kid", math.nan), 6), _number(last.get("fid_infinity", math.nan)),
                         _number(record.best_fid),
                         record.images_seen, record.step, space.settings.signal, unit,
                         *[record.params.get(name, "") for name in space.dimension_names], record.reason,
                         record.run_uri])
    return buffer.getvalue().encode()


def leaderboard_table(records: list[TrialRecord], space: SearchSpace, unit: str = "steps") -> str:
    """The leaderboard for a terminal: one line per trial, the params that were sampled."""
    header = f"{'#':>3} {'trial':>5} {'status':<9} {'last FID':>8} {'KID':>7} {'best FID':>8} {'images':>9}  config"
    lines = [f"{RANKING}; {compared_at(space, unit)}", header, "-" * len(header)]
    for rank, record in enumerate(ranked(records), start=1):
        last = record.last or {}
        line = (f"{rank:>3} {record.number:>5} {record.status:<9} {_number(record.last_fid):>8} "
                f"{_number(last.get('kid', math.nan), 4):>7} {_number(record.best_fid):>8} "
                f"{record.images_seen:>9,}  {record.params_text(' ')}")
        if record.reason:
            line += f"\n{'':>28}-> {record.reason}"
        lines.append(line)
    return "\n".join(lines)


def fid_plot(records: list[TrialRecord], space: SearchSpace, unit: str = "steps") -> bytes:
    """PNG: FID over the search's unit, a line per trial (dashed when stopped early, dotted when failed);
    beside it the rung signal, when that is not FID."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    signal = space.settings.signal
    shown = ["fid"] if signal == "fid" else ["fid", signal]
    figure, panels = pyplot.subplots(1, len(shown), figsize=(8 * len(shown), 5), squeeze=False)
    styles = {"stopped": "--", "failed": ":"}
    time_key = TIME_ATTRIBUTES[unit]
    for axes, score in zip(panels[0], shown):
        for record in records:
            points = [(entry[time_key], entry[score]) for entry in record.history
                      if math.isfinite(entry.get(score, math.nan))]
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, styles.get(record.status, "-"), marker="o", markersize=3,
                          label=f"trial {record.number} ({record.status})")
        axes.set_xlabel(UNIT_WORDS[unit])
        axes.set_ylabel(f"{SIGNALS[score]} (EMA generator)")
        axes.set_title(f"{SIGNALS[score]} of every trial (dashed: stopped early, dotted: failed)")
        if records:
            axes.legend(fontsize="small", ncol=2)
    figure.suptitle(compared_at(space, unit))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    return buffer.getvalue()


def best_samples_png(checkpoint_uri: str) -> bytes:
    """A fixed-noise sample grid from a checkpoint's EMA generator."""
    from pokegan_ray.training.artifacts import FixedSamples, png_bytes
    from pokegan_ray.training.checkpoint import load_generator, read_checkpoint

    state = read_checkpoint(checkpoint_uri)
    generator, experiment = load_generator(state, "cpu")
    model = experiment.gan.model
    samples = FixedSamples(model.latent_size, state.get("classes") if model.conditional else None,
                           experiment.train.seed)
    return png_bytes(samples.grid(generator))


def write_results(folder: Location, records: list[TrialRecord], space: SearchSpace, unit: str = "steps"):
    """Write the leaderboard, plot, best config and best samples; return a SearchOutcome. `unit`: the
    base config's train.unit, what the search's rungs compared trials at."""
    from pokegan_ray.search.runner import SearchOutcome

    folder.join(LEADERBOARD_FILE).write_bytes_atomic(leaderboard_csv(records, space, unit))
    folder.join(PLOT_FILE).write_bytes_atomic(fid_plot(records, space, unit))
    best = best_trial(records)
    best_config_uri = best_checkpoint = best_samples_uri = best_samples = None
    if best is not None:
        config = yaml.safe_load(location(best.run_uri).join(CONFIG_FILE).read_bytes())
        length_key = "images" if (config.get("train") or {}).get("images") is not None else "steps"
        header = (f"# The best config of search {folder.uri}: trial {best.number} ({best.trial_id}), FID "
                  f"{best.last_fid:.2f} after {best.images_seen:,} images (its best {best.best_fid:.2f}).\n"
                  f"# Train it longer with: pokegan train --config best_config.yaml --set train.{length_key}=N\n")
        folder.join(BEST_CONFIG_FILE).write_bytes_atomic(
            (header + yaml.safe_dump(config, sort_keys=False)).encode())
        best_config_uri = folder.join(BEST_CONFIG_FILE).uri
        best_checkpoint = best.best_checkpoint_uri()
        if best_checkpoint:
            best_samples = best_samples_png(best_checkpoint)
            folder.join(BEST_SAMPLES_FILE).write_bytes_atomic(best_samples)
            best_samples_uri = folder.join(BEST_SAMPLES_FILE).uri
    report_uri = SearchReport(folder, space, unit).write_safely(records, best_samples)
    summary: dict[str, Any] = {
        "trials": len(records),
        "by_status": {status: sum(r.status == status for r in records) for status in sorted({r.status for r in records})},
        "images_seen": sum(record.images_seen for record in records),
        "rung_signal": space.settings.signal,
        "rung_unit": unit,
        "report_uri": report_uri,
        "best": None if best is None else {
            "trial": best.number, "trial_id": best.trial_id, "last_fid": best.last_fid, "best_fid": best.best_fid,
            "images_seen": best.images_seen, "params": best.params,
            "checkpoint_uri": best_checkpoint, "config_uri": best_config_uri},
    }
    folder.join(SUMMARY_FILE).write_bytes_atomic(json.dumps(summary, indent=1).encode())
    return SearchOutcome(search_uri=folder.uri, space=space, records=records, best=best, best_config_uri=best_config_uri,
                         best_checkpoint_uri=best_checkpoint, leaderboard_uri=folder.join(LEADERBOARD_FILE).uri,
                         plot_uri=folder.join(PLOT_FILE).uri, best_samples_uri=best_samples_uri, unit=unit,
                         report_uri=report_uri)


class SearchReport:
    """SEARCH/report.html: rewritten after each trial event while the search runs (runner's ReportRefresh,
    after the ledger is written) and once more at its end (write_results). It keeps the thumbnails it made
    and each trial's length, so a rewrite reads the ledger and lists each run's grids, and encodes only the
    grids it has not shown before."""

    def __init__(self, folder: Location, space: SearchSpace, unit: str):
        self.folder, self.space, self.unit = folder, space, unit
        self.thumbnails = report.Thumbnails()
        self.lengths: dict[str, tuple[str, int]] = {}  # by trial id: its run's (train.unit, train.length)
        self.finished_grids: dict[str, list] = {}  # by trial id: a finished trial's grids (listed once)

    def page(self, records: list[TrialRecord], best_samples: bytes | None = None) -> report.Page:
        files = {record.trial_id: self._grid_files(record) for record in records}
        grids = {record.trial_id: report.trial_grids(record, files[record.trial_id], self.thumbnails)
                 for record in records}
        best_grid, caption = self._best_grid(best_trial(records), files, best_samples)
        full = {record.trial_id: report.full_images(record, *self.lengths[record.trial_id])
                for record in records if self._read_length(record)}
        description = f"{self.space.source}: {self.space.description}" if self.space.description else \
            self.space.source
        # "pokegan search: demo" (a search named "search" would otherwise read "pokegan search search")
        return report.Page(title=f"pokegan search: {self.folder.uri.rstrip('/').rsplit('/', 1)[-1]}",
                           records=ranked(records), dimension_names=list(self.space.dimension_names),
                           signal=self.space.settings.signal,
                           about=f"{description.rstrip('.')}. Trials {RANKING}; {compared_at(self.space, self.unit)}.",
                           grids=grids, best_grid=best_grid, best_grid_caption=caption, full_images=full,
                           written_at=time.time())

    def _best_grid(self, best: TrialRecord | None, files: dict[str, list],
                   best_samples: bytes | None) -> tuple[report.Grid | None, str]:
        """The best trial's grid, large, and its caption: best_samples.png once the search has drawn it from
        the best checkpoint, else the trial's own grid nearest its best evaluation."""
        if best is None:
            return None, ""
        if best_samples is not None:
            checkpoint = best.best_checkpoint_uri()
            drawn = next((entry for entry in best.history if checkpoint and entry.get("checkpoint_uri") == checkpoint),
                         best.best)
            grid = report.Grid(int(drawn["step"]), int(drawn["images_seen"]), self.thumbnails.of_image(
                self.folder.join(BEST_SAMPLES_FILE), Image.open(io.BytesIO(best_samples)), "large"))
            return grid, (f"{BEST_SAMPLES_FILE}: from trial {best.number}'s best checkpoint (FID {drawn['fid']:.2f} "
                          f"at step {grid.step:,}, {grid.images_seen:,} images)")
        nearest = report.grid_nearest_best(best, files[best.trial_id])
        if nearest is None:
            return None, ""
        step, file = nearest
        grid = report.Grid(step, report.images_at(best, step), self.thumbnails.of(file, "large"))
        return grid, (f"trial {best.number}'s samples at step {step:,} ({grid.images_seen:,} images), the grid drawn "
                      "nearest its best FID")

    def _grid_files(self, record: TrialRecord) -> list:
        """The trial's sample grids so far: listed on every rewrite while it runs, once when it has ended."""
        if record.trial_id in self.finished_grids:
            return self.finished_grids[record.trial_id]
        files = report.grid_files(location(record.run_uri)) if record.run_uri else []
        if record.finished:
            self.finished_grids[record.trial_id] = files
        return files

    def _read_length(self, record: TrialRecord) -> bool:
        """Whether the trial's length is known (read once from its run's config.yaml, once the trial wrote it)."""
        if record.trial_id not in self.lengths and record.run_uri:
            try:
                train = (yaml.safe_load(location(record.run_uri).join(CONFIG_FILE).read_bytes()) or {})["train"]
            except (StorageError, KeyError, TypeError):
                return False
            self.lengths[record.trial_id] = ("images", int(train["images"])) if train.get("images") is not None \
                else ("steps", int(train["steps"]))
        return record.trial_id in self.lengths

    def write(self, records: list[TrialRecord], best_samples: bytes | None = None) -> str:
        return report.write_page(self.folder.join(REPORT_FILE), self.page(records, best_samples))

    def write_safely(self, records: list[TrialRecord], best_samples: bytes | None = None) -> str | None:
        """write(), but a failure is a warning, never the search's end: the page is a view, not a result."""
        try:
            return self.write(records, best_samples)
        except Exception as error:  # any: a broken grid, a storage hiccup, a bug in the page
            log.warning("could not write the search report %s: %s", self.folder.join(REPORT_FILE).uri, error)
            log.debug("the report's traceback", exc_info=True)
            return None


def _number(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"
