#!/usr/bin/env bash
# Put ops/nightly-retrain.cron in this node's crontab and make sure cron runs. cluster.yaml's
# head_setup_commands call it on every `ray up`, inside the head node's Ray container.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# The Ray image ships without cron.
if ! command -v cron >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cron
fi
crontab "$here/nightly-retrain.cron"

# A container has no init system to start cron: start it once, in UTC, so the times in the
# cron file mean the same everywhere (the image itself sets TZ=America/Los_Angeles).
pidfile=/var/run/crond.pid
if ! { sudo test -s "$pidfile" && sudo kill -0 "$(sudo cat "$pidfile")" 2>/dev/null; }; then
    sudo env TZ=UTC cron
fi
echo "nightly retrain: $(crontab -l | grep -c '^[^#]*nightly_retrain\.sh') cron entry installed"
