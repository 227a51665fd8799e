#!/usr/bin/env bash
# One command: set up privsql and answer a first DP query on the embedded sample data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PRIVSQL_CONFIG=${PRIVSQL_CONFIG:-config/privsql.yaml}
run() { echo; echo "\$ privsql $*"; .venv/bin/privsql "$@"; }
run query "SELECT sex, COUNT(*) AS n, AVG(income) AS avg_income FROM people GROUP BY sex" --analyst alice
run query "SELECT dept, COUNT(*) AS visits, AVG(cost) AS avg_cost FROM visits GROUP BY dept ORDER BY visits DESC" --analyst alice --epsilon 0.5
run budget --analyst alice --ledger 3
