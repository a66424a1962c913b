"""Where things go when nobody says otherwise (relative to the working directory)."""

DEFAULT_DATA_URI = "artifacts/data/bundled"
DEFAULT_RUNS_URI = "artifacts/runs"
DEFAULT_SEARCHES_URI = "artifacts/searches"
