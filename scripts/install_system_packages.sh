#!/usr/bin/env bash
# Debian packages the test suite needs (PostgreSQL clients used by the wire-protocol tests).
# Idempotent: installs only what is missing. Needs root (as on the dev machines and CI).
set -euo pipefail
want=(postgresql-client)
missing=()
for p in "${want[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_packages: missing ${missing[*]} and not root; install them first" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
