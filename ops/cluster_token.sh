#!/usr/bin/env bash
# The Ray authentication token of the cluster, made once on your machine (never printed).
#
#   ops/cluster_token.sh [FILE]      FILE defaults to ~/.ray/pokegan-cluster-token
#
# Ray 2.60 guards a cluster's GCS, dashboard and job API with a token when RAY_AUTH_MODE=token.
# cluster.yaml copies this file to every node as ~/.ray/auth_token (where `ray start` and every
# Ray process on the node look for it) and sets RAY_AUTH_MODE=token there, so the head and the
# workers share one token and nodes can join. Your own `ray job submit` reads it through
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.ray/pokegan-cluster-token
# An existing file is kept: a new token would lock out a running cluster's nodes.
set -euo pipefail

token_file=${1:-$HOME/.ray/pokegan-cluster-token}
if [ -s "$token_file" ]; then
    echo "cluster token: keeping $token_file"
    exit 0
fi
mkdir -p "$(dirname "$token_file")"
umask 077
# 32 random bytes as hex, written straight to the file.
od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$token_file"
echo "cluster token: created $token_file (mode 600); cluster.yaml copies it to every node"
