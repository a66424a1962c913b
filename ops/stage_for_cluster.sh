#!/usr/bin/env bash
# Copy what the cluster nodes need from this checkout to build/cluster/pokegan_ray, the folder
# cluster.yaml mounts on every node: the files git tracks or would track, with your uncommitted
# edits, and nothing .gitignore'd (.venv, artifacts/, build/). Run it before each `ray up`:
# `ray up` hashes a mounted folder file by file and rsyncs it, so mounting the checkout itself
# would read the multi-GB .venv every time.
set -euo pipefail
cd "$(dirname "$0")/.."

destination=build/cluster/pokegan_ray
rm -rf "$destination"
mkdir -p "$destination"
# --cached lists files deleted since the last commit too: skip those.
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done \
    | tar --null --files-from=- -cf - \
    | tar -xf - -C "$destination"
echo "staged $(find "$destination" -type f | wc -l | tr -d ' ') files in $destination for ray up"
