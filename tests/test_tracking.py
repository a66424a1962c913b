"""`--mlflow` without a server: what is checked before Ray, and what may be logged (no credentials).

The logging itself runs against a real MLflow server in test_search.py (a search's trials and `pokegan
train`) and test_registry.py (a retrain's promotion); an unreachable server is in test_cli_errors.py.
"""

from __future__ import annotations

import sys

from pokegan_ray import cli
from pokegan_ray.tracking import config_params, public_uri


def test_without_mlflow_installed_the_option_names_the_extra_and_nothing_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as on a machine without it
    assert cli.main(["train", "--mlflow", "http://127.0.0.1:1", "--storage", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        'pokegan train: error: --mlflow needs the MLflow client, which is not installed: '
        'pip install "pokegan-ray[mlflow]"']
    assert not (tmp_path / "runs").exists()


def test_logged_uris_and_settings_carry_no_credentials():
    assert public_uri("s3://AKIAEXAMPLE:s3cr3t@bucket/runs/a?session_token=t0k3n") == "s3://bucket/runs/a"
    assert public_uri("https://user:pw@mlflow.example.com:5000/path") == "https://mlflow.example.com:5000/path"
    assert public_uri("/data/pokemon@64") == "/data/pokemon@64"  # a local path is left as it is
    assert config_params({"data": {"uri": "s3://key:secret@bucket/data", "resolution": 64},
                          "loss": {"adam_betas": (0.5, 0.999), "clip_value": None}}) == {
        "data.uri": "s3://bucket/data", "data.resolution": "64", "loss.adam_betas": "[0.5, 0.999]",
        "loss.clip_value": "None"}
