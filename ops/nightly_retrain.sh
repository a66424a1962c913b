#!/usr/bin/env bash
# Submit one `pokegan retrain` as a Ray job to the cluster this node belongs to, wait for it to
# end, and append what happened to a log file. Cron runs it nightly on the head node
# (ops/nightly-retrain.cron); by hand, on the head:
#
#   ops/nightly_retrain.sh --registry s3://bucket/registry [other `pokegan retrain` options]
#
# Exit status: that of `ray job submit`, which waits for the job: 0 when the retrain succeeded,
# 1 when it failed (Ray reports failure, not the command's own code; the log has its output),
# another non-zero code when the job could not be submitted; 2 without --registry; 75 when the
# previous run is still going.
#
# Environment: RAY_API_SERVER_ADDRESS (default http://127.0.0.1:8265, the head's job API),
# POKEGAN_LOG_DIR (default ~/logs; the log is nightly-retrain.log there, times in UTC), and Ray's
# token settings: RAY_AUTH_MODE (default token, as cluster.yaml runs the cluster) with the token in
# ~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH naming another file. The token is never logged.
set -uo pipefail

address=${RAY_API_SERVER_ADDRESS:-http://127.0.0.1:8265}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
log_dir=${POKEGAN_LOG_DIR:-$HOME/logs}
log_file=$log_dir/nightly-retrain.log

log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$log_file"; }

mkdir -p "$log_dir" || exit 73

has_registry=false
for argument in "$@"; do
    case $argument in --registry | --registry=?*) has_registry=true ;; esac
done
if ! $has_registry; then
    log "not submitted: no --registry given (usage: $0 --registry URI [pokegan retrain options])"
    exit 2
fi

# One retrain at a time: a run that outlasts a day must not be joined by the next one.
exec 9>>"$log_dir/nightly-retrain.lock"
if ! flock --nonblock 9; then
    log "not submitted: the previous nightly retrain is still running"
    exit 75
fi

submission_id=nightly-retrain-$(date -u +%Y%m%d-%H%M%S)
# The words after `--` go to Ray one by one; Ray quotes each (shlex.join) into the shell command
# line the job runs, so an argument with spaces or `$(...)` arrives as it was given.
log "submitting $submission_id to $address: pokegan retrain$(printf ' %q' "$@")"
# Without --no-wait, `ray job submit` follows the job's output into the log and exits non-zero
# when the job fails, which is the status this script passes on.
ray job submit --address "$address" --submission-id "$submission_id" -- pokegan retrain "$@" \
    >>"$log_file" 2>&1 9>&-
status=$?
log "finished $submission_id: exit status $status"
exit "$status"
