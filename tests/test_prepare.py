"""`pokegan prepare` end to end on a real local Ray, against a local folder and a moto S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from conftest import TEST_SECRET_KEY, s3_keys
from image_files import bad_files, encode, pokemon_like, valid_images, write_files
from pokegan_ray.data import PrepareError, PrepareOptions, prepare, read_manifest
from pokegan_ray.storage import location
from PIL import Image

QUICK = PrepareOptions(resolutions=(32,), augment=2, seed=3)


def rows_of(dest: str, resolution: int) -> dict[tuple[str, int], bytes]:
    """(source, augmentation id) -> pixel bytes, read straight from the Parquet shards the manifest lists."""
    root = location(dest)
    manifest = read_manifest(root)
    rows = {}
    for shard in manifest["shards"][str(resolution)]:
        with root.filesystem.open_input_file(root.join(shard["path"]).path) as handle:
            table = pq.read_table(handle)
        for source, augmentation, pixels in zip(table["source"].to_pylist(), table["augmentation"].to_pylist(),
                                                table["pixels"].to_pylist()):
            rows[(source, augmentation)] = pixels
    return rows


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Valid images in every mode next to every kind of bad file, plus a stray README."""
    folder = tmp_path / "source"
    write_files(folder, valid_images())
    write_files(folder, {name: data for name, (data, _) in bad_files().items()})
    write_files(folder, {"README.md": b"# not an image\n"})
    return folder


def test_mixed_folder_keeps_every_good_image_and_lists_every_bad_one(ray_cluster, mixed_folder, tmp_path):
    dest = str(tmp_path / "prepared")
    manifest = prepare(str(mixed_folder), dest, QUICK)

    good, bad = valid_images(), bad_files()
    assert manifest["kept"] == len(good)
    assert manifest["rows"] == len(good) * (QUICK.augment + 1)
    skipped = {entry["source"]: entry["reason"] for entry in manifest["skipped"]}
    assert set(skipped) == set(bad)
    for name, (_, expected_word) in bad.items():
        assert expected_word.lower() in skipped[name].lower(), (name, skipped[name])
    assert manifest["ignored_non_images"] == 1  # the README
    assert manifest["classes"] == [] and manifest["label_source"] == "none"

    rows = rows_of(dest, 32)
    assert {source for source, _ in rows} == set(good)
    assert {augmentation for _, augmentation in rows} == {0, 1, 2}
    assert all(len(pixels) == 32 * 32 * 3 for pixels in rows.values())
    # The manifest is on disk, and the shards it names exist.
    on_disk = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert on_disk["content_hash"] == manifest["content_hash"]


def test_rerun_is_idempotent_and_augmentation_deterministic(ray_cluster, tmp_path):
    folder = tmp_path / "source"
    write_files(folder, {f"mon{i}.png": encode(Image.fromarray(pokemon_like(64, seed=i)), "PNG") for i in range(4)})
    first = prepare(str(folder), str(tmp_path / "a"), QUICK)
    files_before = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))

    again = prepare(str(folder), str(tmp_path / "a"), QUICK)
    assert again == first  # same manifest, created_at included: nothing was rewritten
    assert sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")) == files_before

    elsewhere = prepare(str(folder), str(tmp_path / "b"), QUICK)
    assert elsewhere["content_hash"] == first["content_hash"]
    assert rows_of(str(tmp_path / "a"), 32) == rows_of(str(tmp_path / "b"), 32)

    reseeded = prepare(str(folder), str(tmp_path / "a"), PrepareOptions(resolutions=(32,), augment=2, seed=4))
    assert reseeded["content_hash"] != first["content_hash"]
    old, new = rows_of(str(tmp_path / "b"), 32), rows_of(str(tmp_path / "a"), 32)
    assert old[("mon0.png", 0)] == new[("mon0.png", 0)]  # originals do not depend on the seed
    assert old[("mon0.png", 1)] != new[("mon0.png", 1)]
    # The replaced set's shards are gone; only the new data folder remains.
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith("data-")] == \
        [f"data-{reseeded['content_hash'][:16]}"]


def test_folder_labels_from_sub_folders_and_from_a_csv(ray_cluster, tmp_path):
    by_folder = tmp_path / "by_folder"
    write_files(by_folder, {f"{kind}/{i}.png": encode(Image.fromarray(pokemon_like(64, seed=i)), "PNG")
                            for kind in ("fire", "water") for i in range(2)})
    manifest = prepare(str(by_folder), str(tmp_path / "p1"), PrepareOptions(resolutions=(32,), augment=0))
    assert manifest["classes"] == ["fire", "water"] and manifest["label_source"] == "folders"
    assert manifest["class_counts"] == {"fire": 2, "water": 2}

    by_csv = tmp_path / "by_csv"
    write_files(by_csv, {f"{i}.png": encode(Image.fromarray(pokemon_like(64, seed=i)), "PNG") for i in range(3)})
    write_files(by_csv, {"labels.csv": b"file,type,type2\n0.png,Grass,Poison\n1.png,fire,\n"})
    manifest = prepare(str(by_csv), str(tmp_path / "p2"), PrepareOptions(resolutions=(32,), augment=0))
    assert manifest["classes"] == ["fire", "grass"] and manifest["labelled"] == 2
    table = pq.read_table(tmp_path / "p2" / read_manifest(location(str(tmp_path / "p2")))["shards"]["32"][0]["path"])
    labels = dict(zip(table["source"].to_pylist(), zip(table["label"].to_pylist(),
                                                        table["type_secondary"].to_pylist())))
    assert labels == {"0.png": (1, "poison"), "1.png": (0, None), "2.png": (-1, None)}


def test_bundled_set_carries_pokemon_types(ray_cluster, tmp_path):
    manifest = prepare("bundled", str(tmp_path / "bundled"), PrepareOptions(resolutions=(32,), augment=0, limit=6))
    assert manifest["kept"] == 6 and manifest["label_source"] == "pokemon types"
    assert len(manifest["classes"]) == 18 and "fire" in manifest["classes"]
    table = pq.read_table(tmp_path / "bundled" / manifest["shards"]["32"][0]["path"])
    types = dict(zip(table["source"].to_pylist(), zip(table["type_primary"].to_pylist(),
                                                       table["type_secondary"].to_pylist())))
    assert types["1.jpg"] == ("grass", "poison")  # Bulbasaur
    assert types["4.jpg"] == ("fire", None)  # Charmander


def test_s3_source_to_s3_destination(ray_cluster, s3_endpoint, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for i in range(3):
        client.put_object(Bucket=s3_bucket, Key=f"raw/mon{i}.png",
                          Body=encode(Image.fromarray(pokemon_like(64, seed=i)), "PNG"))
    client.put_object(Bucket=s3_bucket, Key="raw/broken.png", Body=b"")

    manifest = prepare(f"s3://{s3_bucket}/raw", f"s3://{s3_bucket}/prepared", QUICK)
    assert manifest["kept"] == 3 and [e["source"] for e in manifest["skipped"]] == ["broken.png"]
    keys = s3_keys(s3_endpoint, s3_bucket, "prepared/")
    assert "prepared/manifest.json" in keys
    assert any(key.endswith(".parquet") and "/resolution=32/" in key for key in keys)
    assert len(rows_of(f"s3://{s3_bucket}/prepared", 32)) == 3 * (QUICK.augment + 1)
    stored = client.get_object(Bucket=s3_bucket, Key="prepared/manifest.json")["Body"].read()
    assert TEST_SECRET_KEY.encode() not in stored


# -- bad input: a clear error naming the URI, nothing partial at the destination ------------------------

def test_a_source_without_any_usable_image_fails_and_writes_nothing(ray_cluster, tmp_path):
    folder = tmp_path / "only_bad"
    write_files(folder, {name: data for name, (data, _) in bad_files().items()})
    with pytest.raises(PrepareError, match="no usable image"):
        prepare(str(folder), str(tmp_path / "out"), QUICK)
    assert not (tmp_path / "out").exists()


def test_a_failed_prepare_leaves_the_existing_set_untouched(ray_cluster, tmp_path):
    good = tmp_path / "good"
    write_files(good, {"mon.png": encode(Image.fromarray(pokemon_like(64, seed=9)), "PNG")})
    dest = tmp_path / "out"
    prepare(str(good), str(dest), QUICK)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    only_bad = tmp_path / "only_bad"
    write_files(only_bad, {name: data for name, (data, _) in bad_files().items()})
    with pytest.raises(PrepareError, match="no usable image"):
        prepare(str(only_bad), str(dest), QUICK)
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before


def test_a_folder_without_image_files_fails_before_ray_work(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("nothing here")
    with pytest.raises(PrepareError, match="no image files"):
        prepare(str(tmp_path / "empty"), str(tmp_path / "out"), QUICK)
    with pytest.raises(PrepareError, match="does not exist"):
        prepare(str(tmp_path / "missing"), str(tmp_path / "out"), QUICK)
    assert not (tmp_path / "out").exists()


def test_missing_bucket_is_named(s3_endpoint, s3_bucket, tmp_path):
    with pytest.raises(PrepareError, match=r"s3://no-such-bucket-here/raw.*bucket does not exist"):
        prepare("s3://no-such-bucket-here/raw", str(tmp_path / "out"), QUICK)
    with pytest.raises(PrepareError, match=r"s3://no-such-bucket-here/out.*bucket does not exist"):
        prepare("bundled", "s3://no-such-bucket-here/out", PrepareOptions(resolutions=(32,), limit=2))
    assert not (tmp_path / "out").exists()


def test_unreachable_endpoint_is_named(s3_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(PrepareError, match=r"s3://somewhere/raw.*cannot be reached.*127\.0\.0\.1:9"):
        prepare("s3://somewhere/raw", str(tmp_path / "out"), QUICK)
    with pytest.raises(PrepareError, match=r"cannot be reached"):
        prepare("bundled", "s3://somewhere/out", PrepareOptions(resolutions=(32,), limit=2))
    assert not (tmp_path / "out").exists()


def test_refused_credentials_are_explained_from_the_cli_without_the_secret(strict_s3_endpoint, tmp_path):
    env = dict(os.environ, AWS_ENDPOINT_URL_S3=strict_s3_endpoint, AWS_ACCESS_KEY_ID="AKIAUNKNOWN",
               AWS_SECRET_ACCESS_KEY=TEST_SECRET_KEY, AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run([sys.executable, "-m", "pokegan_ray.cli", "prepare", "--source", "s3://pokebucket/raw",
                             "--dest", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "s3://pokebucket/raw" in result.stderr and "credentials were refused" in result.stderr
    assert TEST_SECRET_KEY not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


def test_bad_options_fail_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pokegan_ray.cli", "prepare", "--resolutions", "64,100",
                             "--dest", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "resolutions must be chosen from" in result.stderr
    assert not (tmp_path / "out").exists()
