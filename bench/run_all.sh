#!/usr/bin/env bash
# One command for every benchmark; prints markdown to stdout (paste into bench/RESULTS.md).
#   bash bench/run_all.sh            # core, backends (DuckDB + PostgreSQL + Spark), wire, load, accuracy vs smartnoise-sql
# Needs PostgreSQL at 127.0.0.1:5432 for the backends figures; the accuracy comparison installs
# smartnoise-sql into its own venv (bench/.venv-peers) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
echo "# privsql benchmarks — $(date -u +%Y-%m-%d)"
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo
echo "## Core engine (DuckDB)"
$PY bench/bench_core.py
echo
echo "## Backends"
$PY bench/bench_backends.py
echo
echo "## Wire protocol"
$PY bench/bench_wire.py
echo
echo "## Load: one analyst's pathological statements against another's latency"
$PY bench/bench_load.py || echo "(bench_load.py: a load target was missed; see its figures above)"
echo
echo "## Accuracy against smartnoise-sql"
[ -x bench/.venv-peers/bin/python ] || bash bench/setup_peers.sh
$PY bench/bench_accuracy.py
echo
echo "## Generative differential soak (small default; the recorded figure: bench/soak_generative.py --count 100000)"
$PY bench/soak_generative.py --count "${SOAK_COUNT:-500}" --backends duckdb,postgres || true
