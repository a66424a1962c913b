"""The report: one self-contained HTML page that shows a search (or one training run) to a person.

    SEARCH/report.html   the leaderboard (sortable); per trial its params, FID and the rung signal over images
                         seen, its sample grids over time and why it ended; the best trial's grid large; the
                         compute all trials took and what early stopping saved
    RUN/report.html      the same page for the one run of `pokegan train`

Everything is inside the file: the curves are inline SVG drawn here, the sample grids downscaled JPEG data
URIs, the sorting a few lines of plain JavaScript. Nothing is fetched, so the page opens offline, from the
run's own disk or from a copy taken out of S3. `render` is a pure function of a `Page`; `Thumbnails` reads
grids through `storage.Location` and keeps what it encoded, so a page rewritten after every event encodes
only the grids that are new. The search builds its page in `search.results.SearchReport`, a run's rank 0 in
`run_page` (training.loop.RunArtifacts).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import posixpath
import re
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pokegan_ray.metrics.evaluation import SIGNALS
from pokegan_ray.search.ledger import COMPLETED, FAILED, RUNNING, STOPPED, TrialRecord
from pokegan_ray.storage import Location, StorageError
from pokegan_ray.training.config import ExperimentConfig, differences_from_defaults

REPORT_FILE = "report.html"
SAMPLES_FOLDER = "samples"  # a run's grids: samples/step-0000250.png (training.loop.RunArtifacts)
GRIDS_PER_TRIAL = 6  # evenly spaced over the run, the first and the latest always among them
THUMBNAIL_WIDTH_PX = 256
LARGE_WIDTH_PX = 768
JPEG_QUALITY = {"thumbnail": 80, "large": 90}
# Curve colours by trial number (Tableau 10): the same trial has the same colour in every chart.
COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
SORTED_HERE = ' aria-sort="ascending"'
_GRID_NAME = re.compile(r"step-(\d+)\.png$")


@dataclass(frozen=True)
class Grid:
    """One sample grid on the page: when it was drawn, and the picture as a data URI."""

    step: int
    images_seen: int
    data_uri: str


@dataclass(frozen=True)
class Page:
    """What the page shows. `records` in the order of the leaderboard (best first)."""

    title: str
    records: list[TrialRecord]
    dimension_names: list[str]
    signal: str  # what the rungs (and PBT, Optuna) compared: fid, kid or fid_infinity
    about: str  # a line under the title: what was searched, what the rungs compared
    grids: dict[str, list[Grid]] = field(default_factory=dict)  # by trial id, in step order
    best_grid: Grid | None = None
    best_grid_caption: str = ""
    # Real images each trial would have seen trained to its end, by trial id (what early stopping saved).
    full_images: dict[str, int] = field(default_factory=dict)
    written_at: float = 0.0  # Unix time
    single_run: bool = False  # `pokegan train`: one run, no search


# -- sample grids ------------------------------------------------------------------------------
def grid_files(run_folder: Location) -> list[tuple[int, Location]]:
    """(step, file) of every sample grid a run has written so far, in step order; none when it has none."""
    try:
        files = run_folder.join(SAMPLES_FOLDER).list_files()
    except StorageError:
        return []
    grids = []
    for info in files:
        match = _GRID_NAME.search(info.path)
        if match:
            grids.append((int(match.group(1)), Location(run_folder.filesystem, info.path,
                                                        run_folder.uri_of(info.path))))
    return sorted(grids, key=lambda pair: pair[0])


def evenly_spaced(items: list, count: int) -> list:
    """At most `count` of `items`, spread evenly from the first to the last."""
    if len(items) <= count:
        return list(items)
    return [items[round(index * (len(items) - 1) / (count - 1))] for index in range(count)]


def data_uri(image: Image.Image, width_px: int, quality: int) -> str:
    """A JPEG data URI of `image`, scaled down to `width_px` wide (never up)."""
    image = image.convert("RGB")
    if image.width > width_px:
        image = image.resize((width_px, max(1, round(image.height * width_px / image.width))), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class Thumbnails:
    """Data URIs of sample grids, each made once (by file and size): a page rewritten after every trial
    event reads and encodes only the grids it has not shown before. (Grids are never rewritten: a run's
    samples/step-N.png is drawn once, at step N.)"""

    def __init__(self):
        self.made: dict[tuple[str, str], str] = {}

    def of(self, grid: Location, size: str = "thumbnail") -> str:
        key = (grid.path, size)
        if key not in self.made:
            self.made[key] = self._encode(Image.open(io.BytesIO(grid.read_bytes())), size)
        return self.made[key]

    def of_image(self, grid: Location, image: Image.Image, size: str = "thumbnail") -> str:
        """The same, for a grid still in memory (the one a run has just written to `grid`)."""
        key = (grid.path, size)
        if key not in self.made:
            self.made[key] = self._encode(image, size)
        return self.made[key]

    @staticmethod
    def _encode(image: Image.Image, size: str) -> str:
        width = THUMBNAIL_WIDTH_PX if size == "thumbnail" else LARGE_WIDTH_PX
        return data_uri(image, width, JPEG_QUALITY[size])


def images_at(record: TrialRecord, step: int) -> int:
    """Real images seen at a generator step: exact at an evaluation, else at the trial's images per step."""
    for entry in record.history:
        if int(entry["step"]) == step:
            return int(entry["images_seen"])
    rated = [entry for entry in record.history if int(entry["step"]) > 0]
    if not rated:
        return 0
    nearest = min(rated, key=lambda entry: abs(int(entry["step"]) - step))
    return round(step * int(nearest["images_seen"]) / int(nearest["step"]))


def trial_grids(record: TrialRecord, files: list[tuple[int, Location]], thumbnails: Thumbnails) -> list[Grid]:
    """A few of a trial's grids, evenly spaced over its run, as thumbnails."""
    return [Grid(step, images_at(record, step), thumbnails.of(file)) for step, file in evenly_spaced(
        files, GRIDS_PER_TRIAL)]


def grid_nearest_best(record: TrialRecord, files: list[tuple[int, Location]]) -> tuple[int, Location] | None:
    """The trial's grid drawn closest to its best evaluation (the latest one when it has no FID yet)."""
    if not files:
        return None
    best = record.best
    if best is None:
        return files[-1]
    return min(files, key=lambda pair: (abs(pair[0] - int(best["step"])), -pair[0]))


# -- compute -----------------------------------------------------------------------------------
def full_images(record: TrialRecord, unit: str, length: int) -> int:
    """Real images a trial would have seen trained to its end (`length` in its `unit`): what it saw, scaled
    by how far along it stopped."""
    if unit == "images":
        return max(length, record.images_seen)
    if record.step <= 0:
        return record.images_seen
    return max(record.images_seen, round(record.images_seen * length / record.step))


def compute_summary(page: Page) -> dict[str, int]:
    """Images and steps all trials took, and what the trials stopped early would have taken to their end."""
    seen = sum(record.images_seen for record in page.records)
    stopped = [record for record in page.records if record.status == STOPPED]
    saved = sum(max(0, page.full_images.get(record.trial_id, record.images_seen) - record.images_seen)
                for record in stopped)
    return {"images_seen": seen, "steps": sum(record.step for record in page.records), "saved_images": saved,
            "without_stopping": seen + saved, "stopped_trials": len(stopped)}


# -- curves as inline SVG ----------------------------------------------------------------------
def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(factor * magnitude for factor in (1, 2, 2.5, 5, 10) if factor * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _tick_text(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    if abs(value) >= 10:
        return f"{value:g}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]
    colour: str
    dashed: bool = False
    stop: tuple[float, float] | None = None  # where an early stop cut it: drawn as a cross


def svg_chart(series: list[Series], x_label: str, y_label: str, width: int = 460, height: int = 230) -> str:
    """A line chart as inline SVG: a line and dots per series, axes with round ticks, values on hover."""
    left, right, top, bottom = 56, 12, 10, 40
    points = [point for one in series for point in one.points]
    if not points:
        return (f'<svg class="chart empty" width="{width}" height="{height // 3}" role="img">'
                f'<text x="8" y="{height // 6}">no {html.escape(y_label)} yet</text></svg>')
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_ticks = nice_ticks(0.0, max(xs) or 1.0)
    y_low, y_high = min(ys), max(ys)
    if y_low == y_high:
        y_low, y_high = y_low - max(abs(y_low) * 0.05, 1e-3), y_high + max(abs(y_high) * 0.05, 1e-3)
    y_ticks = nice_ticks(y_low, y_high)
    x_range, y_range = (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1])

    def place(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_range[0]) / ((x_range[1] - x_range[0]) or 1) * (width - left - right)
        py = top + (y_range[1] - y) / ((y_range[1] - y_range[0]) or 1) * (height - top - bottom)
        return round(px, 1), round(py, 1)

    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{html.escape(y_label)} over {html.escape(x_label)}">']
    for tick in y_ticks:
        _, py = place(x_range[0], tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{py}" y2="{py}"/>'
                     f'<text class="tick" x="{left - 4}" y="{py + 4}" text-anchor="end">{_tick_text(tick)}</text>')
    for tick in x_ticks:
        px, _ = place(tick, y_range[0])
        parts.append(f'<text class="tick" x="{px}" y="{height - bottom + 14}" text-anchor="middle">'
                     f'{_tick_text(tick)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}"/>'
                 f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}"/>'
                 f'<text class="label" x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>'
                 f'<text class="label" transform="translate(12 {(top + height - bottom) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(y_label)}</text>')
    for one in series:
        placed = [place(x, y) for x, y in one.points]
        dash = ' stroke-dasharray="5 3"' if one.dashed else ""
        if len(placed) > 1:
            path = " ".join(f"{px},{py}" for px, py in placed)
            parts.append(f'<polyline fill="none" stroke="{one.colour}" stroke-width="1.8"{dash} points="{path}"/>')
        for (x, y), (px, py) in zip(one.points, placed):
            parts.append(f'<circle cx="{px}" cy="{py}" r="2.6" fill="{one.colour}"><title>'
                         f'{html.escape(one.label)}: {y:.4g} at {x:,.0f} {html.escape(x_label)}</title></circle>')
        if one.stop:
            px, py = place(*one.stop)
            parts.append(f'<path class="stop" d="M{px - 5},{py - 5}L{px + 5},{py + 5}M{px - 5},{py + 5}L{px + 5},'
                         f'{py - 5}" stroke="{one.colour}" stroke-width="2.2"><title>{html.escape(one.label)} stopped '
                         f'early here</title></path>')
    parts.append("</svg>")
    return "".join(parts)


def colour_of(record: TrialRecord) -> str:
    return COLOURS[(record.number - 1) % len(COLOURS)]


def score_series(record: TrialRecord, score: str, label: str | None = None) -> Series:
    points = [(float(entry["images_seen"]), float(entry[score])) for entry in record.history
              if math.isfinite(float(entry.get(score, math.nan)))]
    stop = None
    if record.stop and record.stop.get("signal") == score and math.isfinite(float(record.stop.get("value", math.nan))):
        stop = (float(record.stop["images_seen"]), float(record.stop["value"]))
    elif record.status == STOPPED and points:
        stop = points[-1]
    return Series(label or f"trial {record.number}", points, colour_of(record), dashed=record.status == STOPPED,
                  stop=stop)


# -- the page ----------------------------------------------------------------------------------
def render(page: Page) -> str:
    """The whole HTML page: no external file, font or script."""
    body = [f"<h1>{html.escape(page.title)}</h1>", f'<p class="about">{html.escape(page.about)}</p>',
            _compute_section(page), _best_section(page)]
    if not page.single_run and page.records:
        body.append(_overview_section(page))
    body.append(_leaderboard_section(page))
    body.append('<section id="trials"><h2>' + ("The run" if page.single_run else "Trials") + "</h2>"
                + "".join(_trial_section(page, record) for record in sorted(page.records, key=lambda r: r.number))
                + "</section>")
    written = _time_text(page.written_at)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"pokegan\"><title>{html.escape(page.title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body)
            + f'\n<footer>Written {written} by pokegan; rewritten as the '
            + ("run" if page.single_run else "search") + " goes: reload to see the latest.</footer>"
            + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")


def _compute_section(page: Page) -> str:
    compute = compute_summary(page)
    statuses: dict[str, int] = {}
    for record in page.records:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    finished = all(record.status != RUNNING for record in page.records)
    lines = [f"<p><b>{len(page.records)} {'run' if page.single_run else 'trial'}"
             f"{'' if len(page.records) == 1 else 's'}</b>{f' ({counts})' if counts else ''}. "
             f"Compute{'' if finished else ' so far'}: <b>{compute['images_seen']:,} real images</b> seen by "
             f"D ({compute['steps']:,} generator steps){'' if page.single_run else ' in all trials together'}.</p>"]
    if not page.single_run:
        if compute["stopped_trials"]:
            share = compute["saved_images"] / max(1, compute["without_stopping"])
            lines.append(f'<p id="saving">Early stopping saved <b>{compute["saved_images"]:,} images '
                         f'({share:.0%})</b>: trained to their end, the {compute["stopped_trials"]} trial'
                         f'{"" if compute["stopped_trials"] == 1 else "s"} it stopped would have made these trials '
                         f'see {compute["without_stopping"]:,} images.</p>')
        else:
            lines.append('<p id="saving">No trial has been stopped early' + ("." if finished else " yet.") + "</p>")
    started = [record.started_at for record in page.records if record.started_at]
    if started and page.written_at:
        lines.append(f"<p>First {'run' if page.single_run else 'trial'} started {_time_text(min(started))}, "
                     f"{_duration(page.written_at - min(started))} before this page was written.</p>")
    return '<section id="compute"><h2>Compute</h2>' + "".join(lines) + "</section>"


def _best_section(page: Page) -> str:
    # page.records come ranked: a search's best trial is its first with an FID (see search.results.ranked).
    usable = [record for record in page.records if record.status != FAILED and math.isfinite(record.best_fid)]
    if not usable:
        return '<section id="best"><h2>Best</h2><p>No FID yet.</p></section>'
    best = usable[0]
    where = f"best FID <b>{best.best_fid:.2f}</b> at step {int(best.best['step']):,} " \
            f"({int(best.best['images_seen']):,} images)"
    if page.single_run:
        text = f"<p>The run: {where}; {html.escape(best.params_text())}</p>"
    else:
        text = (f'<p><a href="#trial-{best.number}">Trial {best.number}</a>: FID <b>{best.last_fid:.2f}</b> at its '
                f"last evaluation ({int(best.last['images_seen']):,} images), {where}; "
                f"{html.escape(best.params_text())}</p>")
    picture = ""
    if page.best_grid:
        picture = (f'<figure class="large"><img id="best-grid" src="{page.best_grid.data_uri}" '
                   f'alt="sample grid of the best {"run" if page.single_run else "trial"}">'
                   f"<figcaption>{html.escape(page.best_grid_caption)}</figcaption></figure>")
    return f'<section id="best"><h2>Best</h2>{text}{picture}</section>'


def _overview_section(page: Page) -> str:
    scores = ["fid"] if page.signal == "fid" else ["fid", page.signal]
    charts = []
    for score in scores:
        series = [score_series(record, score) for record in sorted(page.records, key=lambda r: r.number)]
        charts.append(f"<figure>{svg_chart(series, 'real images seen', SIGNALS[score], 560, 280)}"
                      f"<figcaption>{SIGNALS[score]} of every trial (dashed, ending in a cross: stopped early)"
                      "</figcaption></figure>")
    legend = "".join(f'<span><i style="background:{colour_of(record)}"></i>trial {record.number}</span>'
                     for record in sorted(page.records, key=lambda r: r.number))
    return (f'<section id="curves"><h2>Curves</h2><div class="charts">{"".join(charts)}</div>'
            f'<p class="legend">{legend}</p></section>')


def _number_cell(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return '<td class="number" data-value="">-</td>'
    return f'<td class="number" data-value="{value!r}">{value:.{digits}f}</td>'


def _leaderboard_section(page: Page) -> str:
    columns = ["#", "trial", "status", "last FID", "KID at last", "FID∞ at last", "best FID", "images seen",
               "steps", "why it ended", *page.dimension_names]
    # The rows come ranked (#): the header says so, and a first click there sorts the other way.
    head = "".join(f'<th{SORTED_HERE if name == "#" else ""} title="sort">{html.escape(name)}</th>'
                   for name in columns)
    rows = []
    for rank, record in enumerate(page.records, start=1):
        last = record.last or {}
        cells = [f'<td class="number" data-value="{rank}">{rank}</td>',
                 f'<td class="number" data-value="{record.number}"><a href="#trial-{record.number}">{record.number}'
                 "</a></td>",
                 f'<td data-value="{html.escape(record.status)}"><span class="status {record.status}">'
                 f'{html.escape(record.status)}</span></td>',
                 _number_cell(record.last_fid, 2), _number_cell(float(last.get("kid", math.nan)), 4),
                 _number_cell(float(last.get("fid_infinity", math.nan)), 2), _number_cell(record.best_fid, 2),
                 f'<td class="number" data-value="{record.images_seen}">{record.images_seen:,}</td>',
                 f'<td class="number" data-value="{record.step}">{record.step:,}</td>',
                 f'<td class="reason">{html.escape(_short_reason(record))}</td>']
        for name in page.dimension_names:
            value = record.params.get(name)
            shown = "" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))
            sort_value = repr(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else shown
            cells.append(f'<td data-value="{html.escape(sort_value)}">{html.escape(shown)}</td>')
        rows.append(f'<tr data-trial="{record.number}">{"".join(cells)}</tr>')
    what = "runs" if page.single_run else ("trials, ranked at equal compute (furthest first, then by the FID of "
                                           "the last evaluation); click a column to sort")
    return (f'<section id="leaderboard-section"><h2>Leaderboard</h2><p class="hint">{what}</p>'
            f'<div class="scroll"><table id="leaderboard" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _short_reason(record: TrialRecord) -> str:
    if record.status == STOPPED and record.stop:
        return (f"stopped by {str(record.stop.get('by', 'the scheduler')).upper()} at "
                f"{int(record.stop.get('images_seen', record.images_seen)):,} images")
    if record.status == COMPLETED:
        return "completed"
    if record.status == RUNNING:
        return "running"
    return record.reason or record.status


def why_it_ended(record: TrialRecord, full: int | None) -> str:
    if record.status == COMPLETED:
        return f"Completed: trained its full length ({record.images_seen:,} images, {record.step:,} steps)."
    if record.status == RUNNING:
        last = f"; latest evaluation at step {record.step:,} ({record.images_seen:,} images)" if record.history else ""
        return f"Still running{last}."
    if record.status == STOPPED:
        saved = f" Trained to its end it would have seen {full:,} images." if full and full > record.images_seen \
            else ""
        reason = record.reason or "stopped early by the scheduler"
        return f"{reason[0].upper()}{reason[1:]}.{saved}"
    return f"{record.status.capitalize()}: {record.reason or 'no reason recorded'}."


def _trial_section(page: Page, record: TrialRecord) -> str:
    scores = ["fid"] if page.signal == "fid" else ["fid", page.signal]
    charts = "".join(
        "<figure>" + svg_chart([score_series(record, score, SIGNALS[score])], "real images seen",
                               SIGNALS[score])
        + f"<figcaption>{SIGNALS[score]}{' (the rung signal)' if score == page.signal != 'fid' else ''}"
        "</figcaption></figure>" for score in scores)
    params = "".join(f"<li><code>{html.escape(name)}</code> = {html.escape(_value_text(value))}</li>"
                     for name, value in record.params.items()) or "<li>(none sampled)</li>"
    grids = page.grids.get(record.trial_id, [])
    pictures = "".join(f'<figure class="grid"><img src="{grid.data_uri}" alt="trial {record.number} samples at step '
                       f'{grid.step}"><figcaption>step {grid.step:,} · {grid.images_seen:,} images</figcaption>'
                       "</figure>" for grid in grids) or '<p class="hint">No sample grid yet.</p>'
    events = [f"continued from trial {copy.get('from_number') or copy.get('from_trial')}'s checkpoint at step "
              f"{int(copy.get('step', 0)):,} ({int(copy.get('images_seen', 0)):,} images)"
              for copy in record.exploitations]
    events += [f"its process died after step {int(restart.get('after_step', 0)):,} and was restarted "
               f"({restart.get('error', '')})" for restart in record.restarts]
    event_list = f"<ul class=\"events\">{''.join(f'<li>{html.escape(e)}</li>' for e in events)}</ul>" if events else ""
    heading = "Run" if page.single_run else f"Trial {record.number}"
    return (f'<article class="trial" id="trial-{record.number}"><h3><i style="background:{colour_of(record)}"></i>'
            f'{heading} <span class="status {record.status}">{html.escape(record.status)}</span>'
            f'<small>{html.escape(record.trial_id)}</small></h3>'
            f'<p class="why">{html.escape(why_it_ended(record, page.full_images.get(record.trial_id)))}</p>'
            f'{event_list}<div class="columns"><ul class="params">{params}</ul><div class="charts">{charts}</div></div>'
            f'<div class="grids">{pictures}</div>'
            f'<p class="hint">folder: <code>{html.escape(record.run_uri)}</code></p></article>')


def _value_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)


def _time_text(unix: float) -> str:
    if not unix:
        return "-"
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def write_page(target: Location, page: Page) -> str:
    """Render the page and put it at `target` atomically (a reader never sees half a page); its URI."""
    target.write_bytes_atomic(render(page).encode("utf-8"))
    return target.uri


# -- one training run ----------------------------------------------------------------------------
def run_record(run_folder: Location, params: dict[str, Any], history: list[dict[str, float]], status: str,
               reason: str) -> TrialRecord:
    """A training run as a one-trial record: its evaluations are the history's entries with an FID."""
    evaluations = [{"step": int(entry["step"]), "images_seen": int(entry["images_seen"]),
                    **{score: float(entry.get(score, math.nan)) for score in SIGNALS}, "checkpoint_uri": None}
                   for entry in history if "fid" in entry]
    return TrialRecord(trial_id=posixpath.basename(run_folder.uri.rstrip("/")), number=1, params=params,
                       run_uri=run_folder.uri, status=status, reason=reason, history=evaluations)


def run_page(experiment: ExperimentConfig, run_folder: Location, history: list[dict[str, float]], status: str,
             reason: str, thumbnails: Thumbnails) -> Page:
    """The page of one `pokegan train` run: its metric history so far, its grids, and how it ended (or
    "running"). Its params are what differs from the defaults, as the run's name says (config.run_name)."""
    params = {key: value for key, value in differences_from_defaults(experiment)
              if key != "data.uri" and (not key.startswith(("train.", "scale.")) or key == "train.batch_size")}
    record = run_record(run_folder, params, history, status, reason)
    model, train = experiment.gan.model, experiment.train
    about = (f"{model.architecture} / {experiment.gan.loss.name} / {model.upsampler} / {model.resolution_px} px; "
             f"{train.length:,} {'real images' if train.unit == 'images' else 'generator steps'}, FID on "
             f"{train.eval_images} images every {train.eval_every:,} {train.unit}.")
    files = grid_files(run_folder)
    best_file = grid_nearest_best(record, files)
    best_grid = None
    if best_file:
        step, file = best_file
        best_grid = Grid(step, images_at(record, step), thumbnails.of(file, "large"))
    return Page(title=f"pokegan run: {record.trial_id}", records=[record], dimension_names=list(params),
                signal="fid", about=about, grids={record.trial_id: trial_grids(record, files, thumbnails)},
                best_grid=best_grid, best_grid_caption=f"samples at step {best_grid.step:,} ({best_grid.images_seen:,} "
                "images), the grid drawn nearest the run's best FID" if best_grid else "",
                written_at=time.time(), single_run=True)


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1280px;
 padding:0 16px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:0 0 6px;display:flex;gap:8px;align-items:center}h3 small{color:#888;font-weight:normal}
.about,.hint,footer{color:#666}footer{margin:32px 0 8px;font-size:12px}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#f6f6f6;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.number{text-align:right;font-variant-numeric:tabular-nums}td.reason{white-space:normal;min-width:220px}
tbody tr:hover{background:#fafae6}
.status{font-size:12px;padding:1px 6px;border-radius:8px;background:#eee}
.status.completed{background:#dcefdc}.status.stopped{background:#fdebd0}.status.failed{background:#f8d7da}
.status.running{background:#d6e9f8}
h3 i,.legend i{display:inline-block;width:12px;height:12px;border-radius:2px}
.legend span{margin-right:14px;display:inline-flex;gap:4px;align-items:center}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#666}
svg.chart .grid{stroke:#eee}svg.chart .axis{stroke:#999}svg.chart text{font-size:11px;fill:#555}
article.trial{border:1px solid #e4e4e4;border-radius:6px;padding:12px;margin:12px 0}
.columns{display:flex;flex-wrap:wrap;gap:16px}.params{min-width:260px;margin:0;padding-left:18px}
.grids{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}.grids img{width:256px;image-rendering:auto}
figure.large img{max-width:100%}.why{margin:4px 0}
"""

# Sorts the leaderboard by the clicked column: numbers by value, an empty cell (no FID yet) always last.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (header, column) {
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(headers, function (other) { other.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column];
        return cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y), order;
        if (!isNaN(nx) && !isNaN(ny)) { order = nx - ny; } else { order = x.localeCompare(y); }
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""
