#!/usr/bin/env bash
# Peer systems for bench/bench_accuracy.py, in their OWN venv (bench/.venv-peers).
#
# smartnoise-sql pins its own opendp / SQLAlchemy / pandas versions, which must
# not mix with privsql's (.venv). bench_accuracy.py runs SmartNoise in a
# subprocess with this venv's python and reads JSON back, so the two never share
# an interpreter. matplotlib is installed here too: the PNG plot is drawn by this
# venv, so privsql's venv needs nothing beyond its own dependencies.
#
# Usage: bash bench/setup_peers.sh          (idempotent; ~1 minute on a fresh machine)
# Override the versions with SMARTNOISE_SQL=... MATPLOTLIB=... if needed.
set -euo pipefail
cd "$(dirname "$0")"

SMARTNOISE_SQL=${SMARTNOISE_SQL:-1.0.10}
MATPLOTLIB=${MATPLOTLIB:-}
PY=${PYTHON:-python3}
VENV=.venv-peers

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet "smartnoise-sql==${SMARTNOISE_SQL}" "matplotlib${MATPLOTLIB:+==$MATPLOTLIB}"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import sys
print("peers venv:", sys.executable, "Python", sys.version.split()[0])
for name in ("smartnoise-sql", "opendp", "sqlalchemy", "pandas", "numpy", "matplotlib"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} (not installed)")
import snsql  # noqa: F401  (fails loudly if the install is broken)
EOF
