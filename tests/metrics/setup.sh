#!/usr/bin/env bash
# Prepares the exposition test (tests/metrics.rs): the parsers it runs on
# /metrics. Debian's prometheus package for promtool (`promtool check
# metrics` parses and lints the Prometheus text format; the package's
# server is not started), and python3-prometheus-client for the OpenMetrics
# parser of the Prometheus project's Python client (openmetrics.py), since
# promtool reads the Prometheus text format only.
#
# Idempotent: installs only what is missing (a dpkg query when all is there).
set -euo pipefail

log() { printf 'metrics-setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

packages=(prometheus python3-prometheus-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
[[ $EUID -eq 0 ]] || die "missing packages (${missing[*]}); install them as root: apt-get install ${missing[*]}"
log "installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >&2
