#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for the full test suite, then the npm dependencies.
# Debian packages: chromium (browser tests), nginx (proxy and cluster tests), redis-server and
# nats-server (broker tests), prometheus (its server and promtool, for the metrics tests). The tests
# start their own instances on free ports from these binaries, with throwaway data, and stop them by
# PID. Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
# Nchan, a peer in `npm run bench`.
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
# prometheus without its recommends (exporters and their services), which the tests never use.
lean=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
if [ $((${#need[@]} + ${#lean[@]})) -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages: ${need[*]} ${lean[*]}"
  $SUDO apt-get update -qq
  [ ${#need[@]} -eq 0 ] || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  [ ${#lean[@]} -eq 0 ] || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
  # The packages may start system services; the tests never use them.
  ($SUDO service nginx stop) >/dev/null 2>&1 || true
  ($SUDO service redis-server stop) >/dev/null 2>&1 || true
  ($SUDO service nats-server stop) >/dev/null 2>&1 || true
  ($SUDO service prometheus stop) >/dev/null 2>&1 || true
fi
npm ci --no-audit --no-fund
