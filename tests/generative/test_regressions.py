"""Every failure class the generative differential test found, as a minimised regression case.

Each case: a backend, a minimal SQL, the adversarial person whose row triggers it (by label, see
``adversarial.people``; "" when no single row is needed) and a regex on ``harness.failure_class``
that recognises the class in generated runs. The assertion is the differential property on the
smallest data that shows it: on the ordinary rows plus that person, on the ordinary rows alone and
on the empty table, the query never fails and its outcome is the same on all three.

Cases with ``fixed=False`` are open: ``xfail(strict=True)`` with the class name, so the suite stays
green until the engine is fixed and then fails (XPASS) until the mark is removed. Open cases'
patterns also tell ``test_generative`` which failures are already known. The classes, with the
backend's own error, are described in /work/notes/generative_failures.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from conftest import require_postgres
from test_backends import require_spark

from .adversarial import PG_DSN, World, people, world
from .harness import fixed_salt, quiet_logs, run


@dataclass(frozen=True)
class Case:
    id: str  # the class name
    backend: str
    sql: str
    row: str  # label of the triggering adversarial person ("" : the ordinary rows suffice)
    pattern: str  # regex on harness.failure_class
    fixed: bool = False


# minimal queries that fail on more than one backend
FAR_DATE_TRUNC = ("SELECT SUM(n) FROM adv WHERE COALESCE(d, DATE_TRUNC('HOUR', CAST(CAST('0001-01-01 00:00:00' AS "
                  "TIMESTAMP) AS DATE))) >= '2024-02-29'")
ROUND_DIGITS = "SELECT VAR_SAMP(ROUND(1, -1)) FROM adv"
CONSTANT_QUANTILE = "SELECT n, QUANTILE_CONT(0.001, 1) FROM adv GROUP BY 1"

CASES = [
    Case("duckdb-far-date-trunc", "duckdb",
         FAR_DATE_TRUNC, "d=far-future",
         r"^duckdb: ConversionException.*Type INTN with value .* can't be cast to the destination type INTN",
         fixed=True),
    Case("duckdb-decimal-literal-compare", "duckdb",
         "SELECT SUM(p.v) FROM adv AS a INNER JOIN per AS p ON a.pid = p.pid "
         "WHERE a.i > 0.000000000000000000000000000001",
         "i=4294967296",
         r"^duckdb: ConversionException.*to DECIMAL\(N,N\)", fixed=True),
    Case("duckdb-round-double-digits", "duckdb", ROUND_DIGITS, "",
         r"^duckdb: BinderException.*round", fixed=True),
    Case("quantile-constant-argument", "duckdb", CONSTANT_QUANTILE, "",
         r"ZeroDivisionError", fixed=True),
    Case("postgres-date-key-beyond-python", "postgres", "SELECT d AS k0, AVG(i) FROM adv GROUP BY k0", "d=far-future",
         r"^postgres: DataError.*date too (large|small)", fixed=True),
    Case("postgres-timestamp-key-beyond-python", "postgres", "SELECT COUNT(pid) FROM adv GROUP BY ts", "ts=BC",
         r"^postgres: DataError.*timestamp too (large|small)", fixed=True),
    Case("postgres-bool-key-postprocess", "postgres", "SELECT COUNT(*) FROM adv GROUP BY n > -1, t", "",
         r"^postgres: UnsupportedQuery: the SELECT list could not be computed.*to DOUBLE", fixed=True),
    Case("postgres-far-date-trunc", "postgres",
         FAR_DATE_TRUNC, "d=far-future",
         r"^postgres: DatetimeFieldOverflow", fixed=True),
    Case("postgres-round-numeric-digits", "postgres", ROUND_DIGITS, "",
         r"^postgres: UndefinedFunction.*round", fixed=True),
    Case("postgres-subnormal-numeric-to-double", "postgres", "SELECT SUM(f * f) FROM adv", "f=subnormal",
         r"^postgres: NumericValueOutOfRange \(NumericValueOutOfRange: \"N", fixed=True),
    Case("postgres-stddev-underflow", "postgres", "SELECT STDDEV(f) FROM adv", "f=subnormal",
         r"^postgres: NumericValueOutOfRange.*underflow", fixed=True),
    Case("quantile-constant-argument-postgres", "postgres", CONSTANT_QUANTILE,
         "", r"ZeroDivisionError", fixed=True),
    Case("spark-extract-isodow", "spark", "SELECT SUM(EXTRACT(ISODOW FROM d)) FROM adv", "",
         r"^spark: AnalysisException.*INVALID_EXTRACT_FIELD", fixed=True),
    Case("spark-timestamp-key-beyond-python", "spark", "SELECT ts AS k0, COUNT(DISTINCT pid) FROM adv GROUP BY 1",
         "ts=BC", r"^spark: ValueError.*year N is out of range", fixed=True),
    Case("spark-between-is-false-parse", "spark",
         "SELECT CASE WHEN (NOT d BETWEEN '9999-12-31' AND DATE '2024-02-29' IS FALSE) THEN 1 ELSE 0 END AS k0, "
         "COUNT(*) FROM adv GROUP BY k0", "", r"^spark: ParseException", fixed=True),
    Case("spark-decimal-literal-precision", "spark",
         "SELECT SUM(CASE 99999999999999999999999999999999999999.5 WHEN 1 THEN a.n END) FROM adv AS a "
         "JOIN pub AS q ON a.s = q.grp", "", r"^spark: ArithmeticException.*DECIMAL_PRECISION", fixed=True),
    # pyspark cannot return the timestamp 0001-01-01 00:00 to Python, whatever produced it
    Case("spark-timestamp-key-year-one", "spark", "SELECT CAST(d AS TIMESTAMP) AS k0, COUNT(*) FROM adv GROUP BY 1",
         "d=0001-01-01", r"^spark: ValueError.*year N is out of range", fixed=True),
    Case("spark-truncated-timestamp-key", "spark", "SELECT DATE_TRUNC('WEEK', ts) AS k0, COUNT(*) FROM adv GROUP BY 1",
         "ts=BC", r"^spark: ValueError.*year N is out of range", fixed=True),
]
OPEN = [c for c in CASES if not c.fixed]


def _param(case: Case) -> pytest.ParameterSet:
    marks = [pytest.mark.xfail(strict=True, reason=f"open failure class {case.id}")] if not case.fixed else []
    if case.backend == "postgres":
        marks.append(pytest.mark.postgres)
    if case.backend == "spark":
        marks.append(pytest.mark.slow)
    return pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], World]]:
    """kind → one world per module, built on first use."""
    made: dict[str, World] = {}
    with ExitStack() as stack:
        def get(kind: str) -> World:
            if kind not in made:
                if kind == "postgres":
                    require_postgres(PG_DSN)
                if kind == "spark":
                    require_spark()
                made[kind] = stack.enter_context(world(kind, tmp_path_factory.mktemp(kind)))
            return made[kind]

        yield get


def _pid(kind: str, label: str) -> int:
    return next(p.pid for p in people(kind) if p.label == label)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_regression(case: Case, worlds: Callable[[str], World]) -> None:
    w = worlds(case.backend)
    with fixed_salt(), quiet_logs():
        variants = {"ordinary rows + " + (case.row or "nobody"):
                    w.ordinary_plus([_pid(case.backend, case.row)] if case.row else []),
                    "ordinary rows": w.ordinary_plus(), "empty": w.all_pids}
        outcomes = {name: run(w.engine(excluded), case.sql) for name, excluded in variants.items()}
        w.engine()
    failed = {name: str(o) for name, o in outcomes.items() if o.status == "failed"}
    assert not failed, f"{case.id}: {failed}"
    assert len(set(outcomes.values())) == 1, f"{case.id}: outcomes differ: {outcomes}"


def test_cases_are_distinct() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    for c in CASES:
        assert c.backend in ("duckdb", "postgres", "spark")
        if c.row:
            _pid(c.backend, c.row)  # the label exists


def test_world_labels_cover_every_backend() -> None:
    for kind in ("duckdb", "postgres", "spark"):
        assert any(p.adversarial for p in people(kind))

