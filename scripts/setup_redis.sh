#!/usr/bin/env bash
# Install redis-server from the distribution's packages when it is missing (Debian/Ubuntu:
# apt-get; run as root, as CI does). The gateway's shared-state tests start their own
# server on 127.0.0.1 and skip with a clear reason when none is installed.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[sincere] redis-server missing and no apt-get: install Redis or Valkey by hand" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "[sincere] redis-server missing; not root: install it (apt-get install redis-server)" >&2
    exit 0
  fi
fi
echo "[sincere] installing redis-server (apt-get)" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
