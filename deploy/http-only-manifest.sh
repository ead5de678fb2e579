#!/usr/bin/env sh
# Prints spin.toml without its [[trigger.cron]] tables, for hosts that do not
# run the cron trigger plugin: SpinKube's containerd-shim-spin refuses an app
# with a trigger type it does not know ("Only Http, Redis, MQTT, SQS, and
# Command triggers are currently supported"), and `spin up` without the
# plugin installed cannot start the cron trigger. Every job keeps its
# `POST /jobs/<name>` route, which deploy/ drives from outside instead.
#
#   deploy/http-only-manifest.sh > spin.http.toml      # beside spin.toml:
#   spin registry push -f spin.http.toml ghcr.io/you/outpost:1   # `source` paths are relative
#
# Everything else (components, routes, variables) is copied unchanged.
set -eu
manifest=${1:-"$(dirname "$0")/../spin.toml"}
awk '
  # A table header starts or ends a cron trigger table; a cron table ends at
  # the next header of any kind.
  /^[[:space:]]*\[/ { skip = ($0 ~ /^[[:space:]]*\[\[[[:space:]]*trigger\.cron[[:space:]]*\]\][[:space:]]*(#.*)?$/) }
  !skip { print }
' "$manifest"
