#!/usr/bin/env bash
# Prepares the browser test of the web UI (tests/ui.rs): Debian's Chromium,
# and playwright-core from tests/ui/package-lock.json (npm ci). Playwright
# drives the system's Chromium; it downloads no browser of its own.
#
# Idempotent: installs only what is missing, and runs npm ci only when the
# lock file changed since the last install.
#
# Environment:
#   CHROMIUM   the browser to use (default: /usr/bin/chromium, which this
#              script installs when it is missing)
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}

log() { printf 'ui-setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ ! -x $chromium ]]; then
  [[ $chromium == /usr/bin/chromium ]] || die "CHROMIUM=$chromium is not an executable"
  [[ $EUID -eq 0 ]] || die "chromium is missing; install it as root: apt-get install chromium"
  log "installing chromium"
  apt-get update -qq
  # fonts-dejavu-core: the screenshots need a font, and a minimal system may
  # have none (chromium only recommends one).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >&2
fi

command -v node >/dev/null || die "node is missing (Node.js 20 or later runs the browser test)"
command -v npm >/dev/null || die "npm is missing (it installs playwright-core for the browser test)"
major=$(node -p 'process.versions.node.split(".")[0]')
((major >= 20)) || die "node $(node --version) is too old: playwright-core needs Node.js 20 or later"

stamp=$here/node_modules/.ipvs-manager-lock
want=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -d $here/node_modules/playwright-core ]]; then
  exit 0
fi
log "npm ci in tests/ui"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
printf '%s\n' "$want" >"$stamp"
