"""Statistical audit: the stated 95% confidence intervals cover the truth about 95% of the time.

Fixed design, no seed (OpenDP's CSPRNG cannot be seeded): 200 runs per aggregate; with
true coverage 0.95 the number of misses is Binomial(200, 0.05) (mean 10, sd 3.1), so
"at least 180 of 200 covered" fails by chance with probability < 0.1%, while a CI that
is 30% too narrow (coverage ≈ 0.86 for Laplace) fails it with probability > 99%.
"""

from __future__ import annotations

import duckdb
import pytest

from conftest import ROOT

PEOPLE = ROOT / "sample_data" / "people.csv"
RUNS = 200


def truth(aggregate: str) -> dict[str, float]:
    con = duckdb.connect()
    con.execute(f"CREATE VIEW people AS SELECT * FROM read_csv('{PEOPLE}')")
    return {str(s): v for s, v in con.execute(f"SELECT sex, {aggregate} FROM people GROUP BY sex").fetchall()}


@pytest.mark.parametrize("aggregate, epsilon", [
    ("COUNT(*)", 0.05), ("SUM(income)", 1.0), ("AVG(income)", 1.0), ("AVG(age)", 0.2), ("COUNT(income)", 0.1),
    ("VAR_SAMP(income)", 1.0), ("STDDEV_POP(age)", 0.5),
])
def test_ci95_covers_the_truth(shared_engine, aggregate: str, epsilon: float) -> None:
    want = truth(aggregate)
    covered = total = 0
    for _ in range(RUNS // 2):
        result = shared_engine.execute(f"SELECT sex, {aggregate} FROM people GROUP BY sex", analyst="alice",
                                       epsilon=epsilon)
        for (sex, value), cis in zip(result.rows, result.cell_ci):
            covered += abs(value - want[sex]) <= cis[1]
            total += 1
    assert total == RUNS
    # VAR/STDDEV CIs are a delta-method approximation of a non-linear formula: floor 170 of 200
    floor = 170 if aggregate.startswith(("VAR", "STDDEV")) else 180
    assert covered >= floor, f"{aggregate}: the 95% CI covered the truth in only {covered} of {RUNS} cells"
    if aggregate.startswith(("COUNT", "SUM")):  # exact CIs should not be needlessly wide either
        assert covered <= 198, f"{aggregate}: the 95% CI covered {covered} of {RUNS}: too wide"
