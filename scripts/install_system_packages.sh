#!/usr/bin/env bash
# Debian packages the test suite needs: the real PostgreSQL clients the wire-protocol tests drive
# (psql, pgJDBC + javac, psqlODBC). Idempotent: installs only what is missing. Needs root (as on
# the dev machines and in CI).
set -euo pipefail
missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
dpkg -s libpostgresql-jdbc-java >/dev/null 2>&1 || missing+=(libpostgresql-jdbc-java)
dpkg -s odbc-postgresql >/dev/null 2>&1 || missing+=(odbc-postgresql)
dpkg -s unixodbc >/dev/null 2>&1 || missing+=(unixodbc)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_packages: missing ${missing[*]} and not root; install them first" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
