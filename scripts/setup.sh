#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for the full test suite, then the npm dependencies.
# Debian packages: chromium (browser tests) and nginx (proxy fallback tests; the tests start their own
# instance on a free port). Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # The package may start a system nginx; the tests never use it.
  ($SUDO service nginx stop) >/dev/null 2>&1 || true
fi
npm ci --no-audit --no-fund
