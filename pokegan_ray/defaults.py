"""Where things go when nobody says otherwise (relative to the working directory)."""

DEFAULT_DATA_URI = "artifacts/data/bundled"
DEFAULT_RUNS_URI = "artifacts/runs"
DEFAULT_SEARCHES_URI = "artifacts/searches"
# How long a job that does not fit the Ray cluster yet waits for nodes before it fails (--cluster-timeout).
DEFAULT_WAIT_TIMEOUT_S = 15 * 60.0
