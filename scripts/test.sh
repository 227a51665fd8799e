#!/usr/bin/env bash
# The test command: set up (if needed) and run the whole suite. Extra arguments go to pytest.
# pytest's exit code 5 ("no tests collected") is a failure here, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: no tests were collected: failing the run" >&2
  exit 1
fi
exit "$rc"
