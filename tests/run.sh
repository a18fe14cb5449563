#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, and the
# real-kernel tests (which boot Debian's kernel under qemu: see tests/vm/).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/vm/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
