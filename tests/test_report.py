"""The search report (report.html): built from a real ledger and real PNG grids, opened in a real browser.

The browser is Debian's Chromium driven by Playwright (`./dev setup` installs both; Playwright never
downloads a browser of its own). The search itself is not run here: tests/test_search.py checks that a
real search writes the page; this builds one from the same files a search leaves, in a second.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
import shutil
from pathlib import Path

import torch
import yaml
from PIL import Image

from pokegan_ray import report
from pokegan_ray.search.ledger import COMPLETED, FAILED, RUNNING, STOPPED, Ledger, TrialRecord
from pokegan_ray.search.results import SearchReport, ranked
from pokegan_ray.search.space import SearchSpace
from pokegan_ray.storage import Location, location
from pokegan_ray.training.artifacts import grid_image, png_bytes

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored: the screenshot a person can look at
IMAGES, BATCH = 9600, 32  # each trial's length in real images, and its batch: 300 steps to the end
SPACE = SearchSpace.from_dict({
    "description": "report test", "base": {"train": {"images": IMAGES, "batch_size": BATCH}},
    "dimensions": {"loss.name": {"type": "categorical", "values": ["dcgan", "hinge"]},
                   "loss.generator_learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True}},
    "search": {"samples": 5, "signal": "kid"}}, source="report-space.yaml")
# (status, FIDs at 2,400, 4,800, ... images, grids drawn at these steps): trial numbers are the list's order.
TRIALS = [
    (COMPLETED, [310.0, 280.0, 262.0, 250.0], [75, 150, 225, 300]),
    (STOPPED, [355.0], [75]),
    (FAILED, [], []),
    (COMPLETED, [300.0, 275.0, 268.0, 271.0], [75, 150, 225, 300]),
    (RUNNING, [330.0, 291.0], [75, 150]),
]


GRID_PX = 8 * (48 + 2) + 2  # an 8x8 grid of 48 px images, 2 px apart: wider than a thumbnail


def grid_png(seed: int) -> bytes:
    """A real 8x8 sample grid, as the training loop writes one."""
    generator = torch.Generator().manual_seed(seed)
    return png_bytes(grid_image(torch.rand(64, 3, 48, 48, generator=generator) * 2 - 1, 8))


def write_search(folder: Location) -> list[TrialRecord]:
    """A search folder as a search leaves it: the ledger, and per trial its run's config and sample grids."""
    ledger = Ledger(folder)
    for number, (status, fids, grid_steps) in enumerate(TRIALS, start=1):
        trial_id = f"t{number:04d}"
        run = folder.join("runs", trial_id)
        history = [{"step": 75 * index, "images_seen": 2400 * index, "fid": fid, "kid": fid / 1000,
                    "fid_infinity": fid - 20, "checkpoint_uri": None, "handoffs": 0}
                   for index, fid in enumerate(fids, start=1)]
        record = TrialRecord(trial_id=trial_id, number=number, run_uri=run.uri, status=status, history=history,
                             params={"loss.name": "hinge" if number % 2 else "dcgan",
                                     "loss.generator_learning_rate": 2.0e-4 * number},
                             started_at=1_790_000_000.0 + 60 * number)
        if status == STOPPED:
            record.reason = ("stopped early by the ASHA scheduler at step 75 (2,400 images): KID 0.3550 is not in "
                             "the best 1/3 of the trials at this rung (images 2,400)")
            record.stop = {"by": "asha", "signal": "kid", "value": fids[-1] / 1000, "step": 75, "images_seen": 2400}
        if status == FAILED:
            record.reason = "non-finite at step 8: a loss or weight became NaN or infinite between steps 5 and 8"
        run.join("config.yaml").write_bytes_atomic(yaml.safe_dump({"train": {"images": IMAGES}}).encode())
        for step in grid_steps:
            run.join("samples", f"step-{step:07d}.png").write_bytes_atomic(grid_png(number * 1000 + step))
        ledger.write(record)
    return ledger.records()


def leaderboard_trials(page) -> list[int]:
    return [int(number) for number in page.eval_on_selector_all(
        "#leaderboard tbody tr", "rows => rows.map(row => row.dataset.trial)")]


def test_the_search_report_in_a_real_browser_lists_every_trial_loads_every_image_and_sorts_by_fid(tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "no chromium on PATH: ./dev setup installs Debian's (apt-get install chromium)"
    folder = location(str(tmp_path / "search"))
    records = write_search(folder)
    uri = SearchReport(folder, SPACE, "images").write(records)
    assert uri == folder.join("report.html").uri

    requested = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # Self-contained: anything but the file itself and its data URIs would be a fetch from the network.
            page.on("request", lambda request: requested.append(request.url))
            page.goto(Path(uri).as_uri())
            page.wait_for_load_state("load")

            # One row per trial, ranked at equal compute: the completed trials by their last FID, then the running
            # and the stopped one (further first), the failed trial (no FID) last.
            assert leaderboard_trials(page) == [record.number for record in ranked(records)] == \
                [1, 4, 5, 2, 3]

            # Every image loads; there is one per grid of each trial (all of them: at most 6) and the best's.
            images = page.eval_on_selector_all(
                "img", "images => images.map(image => [image.complete, image.naturalWidth, image.alt])")
            assert len(images) == sum(len(grid_steps) for *_, grid_steps in TRIALS) + 1
            assert all(complete and width > 0 for complete, width, _ in images), images
            # Thumbnails over time, and the best trial's grid large (at its own size here).
            assert {width for _, width, alt in images if alt.startswith("trial")} == {report.THUMBNAIL_WIDTH_PX}
            assert page.eval_on_selector("#best-grid", "image => image.naturalWidth") == GRID_PX
            assert not [url for url in requested if not url.startswith(("file:", "data:"))], requested

            # Sorting: a click on the rank reverses the ranking, a click on best FID sorts by it (the trial
            # without an FID stays last), a second click the other way.
            page.locator("#leaderboard th", has_text=re.compile(r"^#$")).click()
            assert leaderboard_trials(page) == [3, 2, 5, 4, 1]
            header = page.locator("#leaderboard th", has_text=re.compile(r"^best FID$"))
            header.click()
            ascending = [record.number for record in sorted(
                (r for r in records if math.isfinite(r.best_fid)), key=lambda r: r.best_fid)] + [3]
            assert leaderboard_trials(page) == ascending == [1, 4, 5, 2, 3]
            header.click()
            assert leaderboard_trials(page) == [2, 5, 4, 1, 3]
            page.locator("#leaderboard th", has_text=re.compile(r"^trial$")).click()
            assert leaderboard_trials(page) == [1, 2, 3, 4, 5]

            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "report.png"
            screenshot.unlink(missing_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert Image.open(screenshot).size[0] >= 1280
    print(f"report screenshot: {screenshot}")


def test_the_page_says_why_each_trial_ended_and_what_early_stopping_saved(tmp_path):
    folder = location(str(tmp_path / "search"))
    records = write_search(folder)
    text = report.render(SearchReport(folder, SPACE, "images").page(records))
    # Trial 2 stopped at 2,400 of 9,600 images: early stopping saved the other 7,200.
    seen = sum(record.images_seen for record in records)
    assert "Early stopping saved <b>7,200 images (" in text
    assert f"would have made these trials see {seen + 7200:,} images" in text
    assert f"<b>{seen:,} real images</b>" in text
    for record in records:
        assert report.why_it_ended(record, IMAGES) in text.replace("&#x27;", "'")
    assert "Stopped early by the ASHA scheduler at step 75" in text and "Still running" in text
    assert "Failed: non-finite at step 8" in text
    # The curves: FID and the rung signal (KID) of each trial, with the stop marked on the signal's curve.
    assert text.count('<svg class="chart"') >= 2 * len([r for r in records if r.history]) + 2
    assert 'class="stop"' in text
    # Nothing outside the page: no http(s) reference in any src, href or stylesheet.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text) and "@import" not in text


def test_a_report_on_s3_is_written_there_and_a_rewrite_encodes_only_new_grids(s3_bucket, tmp_path, monkeypatch):
    folder = location(f"s3://{s3_bucket}/searches/s3")
    records = write_search(folder)
    search_report = SearchReport(folder, SPACE, "images")
    encoded = []
    encode = report.Thumbnails._encode
    monkeypatch.setattr(report.Thumbnails, "_encode", staticmethod(
        lambda image, size: encoded.append(size) or encode(image, size)))

    search_report.write(records)
    first = len(encoded)
    assert first == sum(len(grid_steps) for *_, grid_steps in TRIALS) + 1  # every grid, and the best one large
    text = folder.join("report.html").read_bytes().decode()
    assert text.count('src="data:image/jpeg;base64,') == first
    assert len(re.findall(r'<tr data-trial="\d+">', text)) == len(TRIALS)

    search_report.write(records)  # the next event: nothing new to encode
    assert len(encoded) == first
    running = next(record for record in records if record.status == RUNNING)
    location(running.run_uri).join("samples", "step-0000225.png").write_bytes_atomic(grid_png(7))
    search_report.write(records)
    assert len(encoded) == first + 1


def test_a_report_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, caplog):
    folder = location(str(tmp_path / "search"))
    records = write_search(folder)
    (tmp_path / "search" / "report.html").mkdir()  # a folder where the page should go: the write fails
    with caplog.at_level(logging.WARNING):
        assert SearchReport(folder, SPACE, "images").write_safely(records) is None
    assert "could not write the search report" in caplog.text


def test_evenly_spaced_grids_keep_the_first_and_the_latest():
    assert report.evenly_spaced(list(range(20)), 6) == [0, 4, 8, 11, 15, 19]
    assert report.evenly_spaced([1, 2], 6) == [1, 2]


def test_a_thumbnail_is_a_small_jpeg_never_scaled_up():
    uri = report.data_uri(Image.new("RGB", (1056, 1056), "white"), report.THUMBNAIL_WIDTH_PX, 80)
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert uri.startswith("data:image/jpeg;base64,") and picture.format == "JPEG"
    assert picture.size == (report.THUMBNAIL_WIDTH_PX, report.THUMBNAIL_WIDTH_PX)
    small = report.data_uri(Image.open(io.BytesIO(grid_png(1))), 1000, 80)
    assert Image.open(io.BytesIO(base64.b64decode(small.split(",", 1)[1]))).size[0] < 1000
