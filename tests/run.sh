#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, the
# real-kernel tests (which boot Debian's kernel under qemu: see tests/vm/) and
# the web UI in headless Chromium (tests/ui.rs; its setup: tests/ui/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/setup.sh
tests/ui/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
