#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, the
# real-kernel tests (which boot Debian's kernel under qemu: see tests/vm/) and
# the web UI in headless Chromium (tests/ui.rs; its setup: tests/ui/setup.sh),
# and /metrics through promtool and an OpenMetrics parser (tests/metrics.rs;
# its setup: tests/metrics/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/setup.sh
tests/ui/setup.sh
tests/metrics/setup.sh
# tests/service.rs checks the unit with systemd-analyze (package systemd).
if ! command -v systemd-analyze >/dev/null; then
  [[ $EUID -eq 0 ]] || { echo "run.sh: systemd-analyze is missing; install the systemd package" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >&2
fi
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
