"""Adversarial tests of the DP rewrite: contribution bounds hold whatever the data holds.

Neighbouring databases differ by *all* rows of one person (user-level add/remove
DP). For every query below we compute the exact, bounded measures the backend
returns (before noise) on a database D and on D + X, where X is a hostile
person (1,000 rows, values far outside the declared bounds, NaN/±inf, NULLs,
keys outside the public domain, a thousand distinct open keys), and check that
the difference is within what the plan states:

* L1 over all groups of every measure ≤ ``measure.sensitivity`` (grid units,
  i.e. ``sensitivity · unit`` in real units);
* in each group, X's contribution lies in the measure's per-person interval;
* X changes at most ``plan.max_groups`` groups;
* the stated sensitivities are no larger than the design's contract
  (counts: max_rows·max_groups; sums: max_rows·max_groups·max(|lo|, |hi|)).

With the noise switched off (``privsql.engine.add_laplace_noise`` patched to
the identity) the released answers obey the same bounds, AVG stays within its
declared range, and no key outside a public domain or below the threshold is
released. A hypothesis test repeats the neighbour check on random datasets.

Finally, the *outcome* of a query (answer vs error) must not depend on one
person either; the cases that do are privacy bugs, marked xfail(strict=True).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import outcome, write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import privsql.engine as engine_module
from privsql import errors as E
from privsql.config import parse_config
from privsql.engine import Engine
from privsql.sql.plan import PAIR_BITS

SALT = 0x5EED  # any fixed salt: the group bound must hold for every ordering
MAX_GROUPS, MAX_ROWS = 2, 3
V_LO, V_HI = -5.0, 10.0      # t.v
N_LO, N_HI = -20, -2         # t.n: negative bounds
U_LO, U_HI = 0.0, 100.0      # u.v
X = 999                      # the hostile person

T_COLUMNS = ("pid", "k", "g", "v", "n", "day", "s")
U_COLUMNS = ("pid", "k", "v", "w")


PUB_ROWS = [("a", "A"), ("a", "B"), ("b", "A"), ("c", "C"), ("zz", "Z"), ("d", "D"), ("d", "D")]


def config_text(tmp: Path, t_csv: Path, u_csv: Path) -> str:
    pub_csv = write_csv(tmp / "pub.csv", ("k", "grp"), PUB_ROWS)  # public, duplicate keys multiply rows
    raw = {
        "backend": {"kind": "duckdb", "path": ":memory:"},
        "budget_store": {"kind": "sqlite", "path": str(tmp / "budget.sqlite")},
        "cache": {"enabled": False},
        "defaults": {"epsilon": 1.0, "delta": 1e-6},
        "tables": {
            "t": {"source": str(t_csv), "privacy_unit": "pid", "max_groups": MAX_GROUPS, "max_rows": MAX_ROWS,
                  "columns": {"pid": "int", "k": {"type": "text", "values": ["a", "b", "c", "d"]}, "g": "text",
                              "v": {"type": "float", "lower": V_LO, "upper": V_HI},
                              "n": {"type": "int", "lower": N_LO, "upper": N_HI}, "day": "date", "s": "text"}},
            "u": {"source": str(u_csv), "privacy_unit": "pid", "one_row_per_unit": True,
                  "columns": {"pid": "int", "k": {"type": "text", "values": ["a", "b"]},
                              "v": {"type": "float", "lower": U_LO, "upper": U_HI},
                              "w": {"type": "int", "lower": 0, "upper": 5}}},
            "pub": {"source": str(pub_csv), "public": True, "columns": {"k": "text", "grp": "text"}},
        },
        "analysts": {"alice": {"epsilon": 1.0e9, "delta": 0.5},
                     "zed": {"epsilon": 1.0e9, "delta": 0.5, "accounting": "zcdp"}},
    }
    return yaml.safe_dump(raw)


def base_t_rows() -> list[tuple[Any, ...]]:
    rows = []
    for i in range(1, 41):
        for j in range(i % 4 + 1):
            v = None if (i + j) % 11 == 0 else ((i * 7 + j * 3) % 30) - 10  # some values outside [-5, 10]
            rows.append((i, "abcd"[(i + j) % 4], f"g{(i + j) % 3}", v, -((i + j) % 25),
                         f"2025-01-{1 + (i + j) % 28:02d}", f"s{i % 5}"))
    return rows


def hostile_t_rows() -> list[tuple[Any, ...]]:
    ks = ["a", "b", "c", "d", "zz", None]
    vs = ["1e300", "-1e300", "nan", "inf", "-inf", None, "7.5", "10", "-5", "1e308"]
    ns = [9223372036854775807, -9223372036854775808, 0, -2, -20, None, 5]
    return [(X, ks[j % 6], f"x{j}", vs[j % 10], ns[j % 7], "2025-06-01", "secret") for j in range(1000)]


def base_u_rows() -> list[tuple[Any, ...]]:
    return [(i, "ab"[i % 2], float(i * 3 % 120), i % 6) for i in range(1, 41)]


HOSTILE_U = [(X, "a", "1e300", 10**15)]


def make_engine(tmp: Path, t_rows: list[tuple[Any, ...]], u_rows: list[tuple[Any, ...]]) -> Engine:
    tmp.mkdir(parents=True, exist_ok=True)
    t_csv = write_csv(tmp / "t.csv", T_COLUMNS, t_rows)
    u_csv = write_csv(tmp / "u.csv", U_COLUMNS, u_rows)
    return Engine(parse_config(config_text(tmp, t_csv, u_csv), base_dir=tmp))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine]]:
    """(D, D + X): the same database without and with the hostile person."""
    root = tmp_path_factory.mktemp("bounds")
    without = make_engine(root / "d", base_t_rows(), base_u_rows())
    with_x = make_engine(root / "dx", base_t_rows() + hostile_t_rows(), base_u_rows() + HOSTILE_U)
    yield without, with_x
    without.close()
    with_x.close()


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Noise off, and a fixed salt: the per-person choice of max_groups groups is random per query, so
    only with the same salt do two runs differ by the one person's contribution alone."""

    def identity(values: Any, scale: float) -> np.ndarray:
        return np.array(values, dtype=np.int64, copy=True)

    monkeypatch.setattr(engine_module.secrets, "randbits", lambda bits: SALT)

    monkeypatch.setattr(engine_module, "add_laplace_noise", identity)
    if hasattr(engine_module, "add_gaussian_noise"):
        monkeypatch.setattr(engine_module, "add_gaussian_noise", identity)


# ------------------------------------------------------------------------------------------------
# measure-level neighbour checks


def exact_measures(engine: Engine, sql: str, analyst: str | None = None) -> tuple[Any, dict[tuple[Any, ...], list[int]]]:
    """The plan and the exact bounded measures per group (grid units), as the backend returns them."""
    if analyst is None:
        prepared = engine.prepare(sql, epsilon=1.0, delta=1e-6)
    else:  # the analyst's accounting picks the mechanism (zCDP: Gaussian on L2 sensitivity)
        prepared = engine.prepare(sql, epsilon=1.0, delta=1e-6, analyst=engine.analyst(analyst))
    rows = engine.backend.run(engine.backend_sql(prepared, salt=SALT))
    nkeys = len(prepared.plan.keys)
    out: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        key = tuple(row[:nkeys])
        assert key not in out, f"group {key} returned twice"
        out[key] = [0 if x is None else int(x) for x in row[nkeys:]]
    return prepared.plan, out


def plan_signature(plan: Any) -> list[tuple[Any, ...]]:
    return [(m.name, m.kind, m.sensitivity, m.unit, m.person_lo, m.person_hi, m.scale) for m in plan.measures]


def _coordinates(plan: Any, values: list[int]) -> list[list[int]]:
    """Per measure, the released coordinates of one group: one value, one per histogram bin, or an
    AVG pair's (A, B = count·2^PAIR_BITS − A)."""
    out, pos = [], 0
    for m in plan.measures:
        width = len(m.columns)
        block = values[pos:pos + width]
        pos += width
        if m.kind == "pair":
            block = [block[0], block[1] * 2**PAIR_BITS - block[0]]
        out.append(block)
    return out


def check_neighbours(plan: Any, a: dict[tuple[Any, ...], list[int]], b: dict[tuple[Any, ...], list[int]]) -> None:
    """a: measures without the person, b: with. Asserts every bound the plan relies on."""
    zero = [0] * sum(len(m.columns) for m in plan.measures)
    domain = plan.public_domain if plan.keys else None
    if domain is not None:  # groups outside a public domain are computed but never released (release())
        allowed = set(domain)
        a = {k: v for k, v in a.items() if k in allowed}
        b = {k: v for k, v in b.items() if k in allowed}
    keys = set(a) | set(b)
    changed = {k for k in keys if a.get(k, zero) != b.get(k, zero)}
    assert len(changed) <= plan.max_groups, f"one person changed {len(changed)} groups: {sorted(map(str, changed))}"
    before = {k: _coordinates(plan, a.get(k, zero)) for k in keys}
    after = {k: _coordinates(plan, b.get(k, zero)) for k in keys}
    for j, m in enumerate(plan.measures):
        diffs = [[y - x for x, y in zip(before[k][j], after[k][j])] for k in keys]
        l1 = sum(abs(d) for group in diffs for d in group)
        assert l1 <= m.sensitivity * (1 + 1e-12), \
            f"{m.name} ({m.kind}): L1 change {l1} > sensitivity {m.sensitivity} (grid units)"
        lo, hi = m.person_lo / m.unit, m.person_hi / m.unit
        for group in diffs:
            if len(group) == 1:
                assert lo - 1e-6 <= group[0] <= hi + 1e-6, f"{m.name} ({m.kind}): one person moved a group by " \
                                                           f"{group[0]}, outside [{lo}, {hi}]"
            else:  # a histogram or a pair: the person's coordinates add up to at most their bound
                assert sum(abs(d) for d in group) <= hi + 1e-6, f"{m.name} ({m.kind}): one person moved a " \
                                                                f"group by {group}, more than {hi} in total"


def check_contract(plan: Any) -> None:
    """The plan's sensitivities are within the design's contract for this table."""
    t = plan.table
    rows = 1 if t.one_row_per_unit else t.max_rows
    groups = 1 if (t.one_row_per_unit or not plan.keys) else t.max_groups
    assert plan.max_groups <= groups and plan.max_rows <= rows
    for m in plan.measures:
        real = m.sensitivity * m.unit
        assert math.isfinite(real) and real >= 0
        if m.kind in ("sum", "csum"):
            assert math.isfinite(m.clamp_lo) and math.isfinite(m.clamp_hi), f"{m.name}: non-finite clamp bounds"
        if m.kind in ("rows", "nonnull"):
            assert real <= rows * groups * (1 + 1e-12)
        elif m.kind == "units":
            assert real <= groups * (1 + 1e-12)
        elif m.kind == "sum":
            assert m.clamp_lo is not None and m.clamp_hi is not None
            assert real <= rows * groups * max(abs(m.clamp_lo), abs(m.clamp_hi)) * (1 + 1e-9)
        elif m.kind == "csum":
            assert real <= rows * groups * (m.clamp_hi - m.clamp_lo) / 2 * (1 + 1e-9)
        elif m.kind == "pair":
            assert real <= rows * groups * (m.clamp_hi - m.clamp_lo) * (1 + 1e-9)
        if real > 0:
            assert m.scale > 0 and math.isfinite(m.scale), f"{m.name}: data-dependent measure without noise"


PRECEDENCE_BUG = ("bug: the rewrite's domain filter is emitted without parentheses, `k = 'a' IN (FALSE, TRUE)`, "
                  "which DuckDB reads as `k = ('a' IN (FALSE, TRUE))`: the cast of 'a' to BOOLEAN fails per row "
                  "(BackendError after the charge) and castable literals silently filter the wrong rows")

NEIGHBOUR_QUERIES: list[Any] = [
    ("count", "SELECT COUNT(*) FROM t"),
    ("all_aggregates", "SELECT COUNT(*), SUM(v), AVG(v), COUNT(v), COUNT(DISTINCT pid) FROM t"),
    ("public_key", "SELECT k, COUNT(*), SUM(v), AVG(v), COUNT(DISTINCT pid) FROM t GROUP BY k"),
    ("open_key_many_groups", "SELECT g, COUNT(*), SUM(n) FROM t GROUP BY g"),
    ("negative_bounds", "SELECT SUM(n), AVG(n) FROM t"),
    ("expressions", "SELECT k, SUM(v * 2 - n), AVG(ABS(v) + 1) FROM t WHERE v > 0 OR n < -3 GROUP BY k"),
    ("two_keys", "SELECT k, g, SUM(CASE WHEN v > 5 THEN v ELSE -v END) FROM t GROUP BY k, g"),
    ("int_bound_domain_key", "SELECT n, COUNT(*), SUM(v) FROM t GROUP BY n"),
    ("derived_float_key", "SELECT FLOOR(v / 5) * 5 AS b, COUNT(*) FROM t GROUP BY 1"),
    ("derived_bool_key", "SELECT n > -5 AS big, COUNT(*), SUM(v) FROM t GROUP BY 1"),
    pytest.param("SELECT k = 'a' AS isa, COUNT(*), SUM(v) FROM t GROUP BY 1", id="derived_bool_key_equality"),
    ("variance", "SELECT k, VAR_POP(v), STDDEV(n) FROM t GROUP BY k"),
    ("count_distinct", "SELECT k, COUNT(DISTINCT g), COUNT(DISTINCT v) FROM t GROUP BY k"),
    ("count_distinct_open_key", "SELECT g, COUNT(DISTINCT k) FROM t GROUP BY g"),
    ("count_distinct_alone", "SELECT COUNT(DISTINCT g) FROM t"),
    ("where_on_hostile_values", "SELECT COUNT(*), SUM(v) FROM t WHERE v > 1e299 OR v IS NULL OR v <> v"),
    ("one_row_table", "SELECT COUNT(*), SUM(v), AVG(v), SUM(w) FROM u"),
    ("one_row_table_key", "SELECT k, COUNT(*), SUM(v) FROM u GROUP BY k"),
    ("one_row_table_int_key", "SELECT w, COUNT(*), AVG(v) FROM u GROUP BY w"),
    # joins: bounding must happen after the join (a public table with duplicate keys multiplies rows)
    ("join_public", "SELECT COUNT(*), SUM(t.v), AVG(t.n) FROM t JOIN pub ON t.k = pub.k"),
    ("join_public_key", "SELECT pub.grp, COUNT(*), SUM(t.v) FROM t JOIN pub ON t.k = pub.k GROUP BY pub.grp"),
    ("join_public_private_key", "SELECT t.k, COUNT(*) FROM t JOIN pub ON t.k = pub.k GROUP BY t.k"),
    ("one_row_table_join_public", "SELECT COUNT(*), SUM(u.v) FROM u JOIN pub ON u.k = pub.k"),
    ("join_private_on_unit", "SELECT t.k, COUNT(*), SUM(u.v), SUM(t.v) FROM t JOIN u ON t.pid = u.pid GROUP BY t.k"),
    ("left_join_private", "SELECT COUNT(*), SUM(t.v) FROM u LEFT JOIN t ON u.pid = t.pid"),
    ("public_left_join_private", "SELECT COUNT(*), SUM(t.v) FROM pub LEFT JOIN t ON t.k = pub.k"),
]


def _ids(cases: list[Any]) -> list[Any]:
    return [pytest.param(c[1], id=c[0]) if type(c) is tuple else c for c in cases]


@pytest.mark.parametrize("sql", _ids(NEIGHBOUR_QUERIES))
def test_one_hostile_person_moves_measures_within_sensitivity(pair: tuple[Engine, Engine], sql: str) -> None:
    without, with_x = pair
    plan_a, a = exact_measures(without, sql)
    plan_b, b = exact_measures(with_x, sql)
    assert plan_signature(plan_a) == plan_signature(plan_b), "the plan must not depend on the data"
    check_contract(plan_b)
    check_neighbours(plan_b, a, b)


ZCDP_QUERIES = ["SELECT k, COUNT(*), SUM(v), AVG(v) FROM t GROUP BY k", "SELECT g, COUNT(*), SUM(n) FROM t GROUP BY g",
                "SELECT k, VAR_POP(v) FROM t GROUP BY k"]


@pytest.mark.parametrize("sql", ZCDP_QUERIES)
def test_zcdp_plans_bound_the_l2_change(pair: tuple[Engine, Engine], sql: str) -> None:
    without, with_x = pair
    plan_a, a = exact_measures(without, sql, analyst="zed")
    plan, b = exact_measures(with_x, sql, analyst="zed")
    assert plan.mechanism == "gaussian" and plan_signature(plan_a) == plan_signature(plan)
    zero = [0] * len(plan.measures)
    keys = set(a) | set(b)
    for j, m in enumerate(plan.measures):
        l2 = math.sqrt(sum((b.get(k, zero)[j] - a.get(k, zero)[j]) ** 2 for k in keys))
        assert l2 <= m.sensitivity * (1 + 1e-12), f"{m.name}: L2 change {l2} > sensitivity {m.sensitivity}"
        assert m.sensitivity <= math.sqrt(plan.max_groups) * max(abs(m.person_lo), abs(m.person_hi)) / m.unit \
            * (1 + 1e-12)


def test_person_in_many_groups_touches_at_most_max_groups(pair: tuple[Engine, Engine]) -> None:
    without, with_x = pair
    plan, a = exact_measures(without, "SELECT g, COUNT(*) FROM t GROUP BY g")
    _, b = exact_measures(with_x, "SELECT g, COUNT(*) FROM t GROUP BY g")
    x_groups = [k for k in b if k not in a]  # X has 1,000 distinct g values of its own
    assert 0 < len(x_groups) <= MAX_GROUPS
    assert all(b[k][0] <= MAX_ROWS for k in x_groups)


def test_one_row_per_unit_duplicate_is_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(E.ConfigError, match="one_row_per_unit"):
        make_engine(tmp_path / "dup", base_t_rows(), base_u_rows() + [(1, "a", 1.0, 1)])


def test_one_row_per_unit_null_unit_is_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(E.ConfigError):
        make_engine(tmp_path / "null", base_t_rows(), base_u_rows() + [(None, "a", 1.0, 1)])


# ------------------------------------------------------------------------------------------------
# released answers with the noise switched off


def answer(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in engine.execute(sql, analyst="alice", epsilon=1.0, delta=1e-6).rows]


def test_zero_noise_count_and_sum_bounds(pair: tuple[Engine, Engine], no_noise: None) -> None:
    without, with_x = pair
    (c0,), (c1,) = answer(without, "SELECT COUNT(*) FROM t")[0], answer(with_x, "SELECT COUNT(*) FROM t")[0]
    assert 0 <= c1 - c0 <= MAX_ROWS * MAX_GROUPS
    (s0,), (s1,) = answer(without, "SELECT SUM(v) FROM t")[0], answer(with_x, "SELECT SUM(v) FROM t")[0]
    assert abs(s1 - s0) <= MAX_ROWS * MAX_GROUPS * max(abs(V_LO), abs(V_HI)) + 1e-6
    (n0,), (n1,) = answer(without, "SELECT SUM(n) FROM t")[0], answer(with_x, "SELECT SUM(n) FROM t")[0]
    assert MAX_ROWS * N_LO - 1e-6 <= n1 - n0 <= 1e-6  # negative bounds: X can only lower the sum


def test_zero_noise_grouped_answers(pair: tuple[Engine, Engine], no_noise: None) -> None:
    without, with_x = pair
    sql = "SELECT k, COUNT(*), SUM(v), AVG(v) FROM t GROUP BY k"
    a = {r[0]: r[1:] for r in answer(without, sql)}
    b = {r[0]: r[1:] for r in answer(with_x, sql)}
    assert set(a) == set(b) == {"a", "b", "c", "d"}  # the public domain, nothing else ('zz', NULL dropped)
    assert sum(abs(b[k][0] - a[k][0]) for k in a) <= MAX_ROWS * MAX_GROUPS
    assert sum(abs(b[k][1] - a[k][1]) for k in a) <= MAX_ROWS * MAX_GROUPS * max(abs(V_LO), abs(V_HI)) + 1e-6
    for k, (_, _, avg) in b.items():  # NULL where the count is below its noise level (a few dozen rows here)
        assert avg is None or V_LO <= avg <= V_HI, f"AVG for {k} left its declared range: {avg}"


def test_zero_noise_avg_of_only_hostile_rows_stays_in_range(pair: tuple[Engine, Engine], no_noise: None) -> None:
    _, with_x = pair
    rows = answer(with_x, f"SELECT AVG(v), AVG(n), SUM(v), COUNT(*) FROM t WHERE pid = {X}")
    (avg_v, avg_n, sum_v, count), = rows  # one person's rows: AVG is NULL below the count's noise level
    assert (avg_v is None or V_LO <= avg_v <= V_HI) and (avg_n is None or N_LO <= avg_n <= N_HI)
    assert abs(sum_v) <= MAX_ROWS * max(abs(V_LO), abs(V_HI)) + 1e-6 and count <= MAX_ROWS
    (avg_u, sum_w), = answer(with_x, f"SELECT AVG(v), SUM(w) FROM u WHERE pid = {X}")
    assert (avg_u is None or U_LO <= avg_u <= U_HI) and 0 <= sum_w <= 5
    (avg_many,), = answer(with_x, f"SELECT AVG(v) FROM t WHERE pid = {X} OR pid < 40")  # enough rows to answer
    assert avg_many is not None and V_LO <= avg_many <= V_HI


def test_zero_noise_threshold_hides_small_groups(pair: tuple[Engine, Engine], no_noise: None) -> None:
    without, with_x = pair
    released = {r[0] for r in answer(with_x, "SELECT g, COUNT(*) FROM t GROUP BY g")}
    assert not any(str(g).startswith("x") for g in released), "a one-person group passed the threshold"
    assert released <= {r[0] for r in answer(without, "SELECT g, COUNT(*) FROM t GROUP BY g")} | {None}


def test_zero_noise_int_key_domain_drops_out_of_bound_keys(pair: tuple[Engine, Engine], no_noise: None) -> None:
    _, with_x = pair
    keys = [r[0] for r in answer(with_x, "SELECT w, COUNT(*) FROM u GROUP BY w")]
    assert keys == [0, 1, 2, 3, 4, 5]  # X's w = 1e15 is outside [0, 5]: never a key


# ------------------------------------------------------------------------------------------------
# property test on random datasets (one engine, table contents replaced per example)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    e = make_engine(tmp_path_factory.mktemp("scratch"), base_t_rows(), base_u_rows())
    if getattr(e.backend, "_con", None) is None:
        e.close()
        pytest.skip("the property test refills the embedded DuckDB tables directly")
    yield e
    e.close()


def refill(engine: Engine, rows: list[tuple[Any, ...]]) -> None:
    """Replace the rows of table t (pid, k, g, v, n) in the embedded DuckDB."""
    cur = engine.backend._con.cursor()  # type: ignore[attr-defined]
    try:
        cur.execute('DELETE FROM "t"')
        if rows:
            # floats travel as text: DuckDB turns a NaN inside a Python object array into NULL
            rows = [(p, k, g, None if v is None else repr(float(v)), n) for p, k, g, v, n in rows]
            cols = list(zip(*rows))
            data = {name: np.array(list(values) + [None], dtype=object)[:-1]
                    for name, values in zip(("pid", "k", "g", "v", "n"), cols)}
            cur.register("__fill", data)
            cur.execute('INSERT INTO "t" (pid, k, g, v, n) SELECT CAST(pid AS BIGINT), CAST(k AS VARCHAR), '
                        'CAST(g AS VARCHAR), CAST(v AS DOUBLE), CAST(n AS BIGINT) FROM __fill')
            cur.unregister("__fill")
    finally:
        cur.close()


ROW = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "zz", None]),
    st.sampled_from(["g0", "g1", "g2", "g3", None]),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
              st.sampled_from([1e300, -1e300, V_LO, V_HI, 0.0])),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(N_LO - 3, N_HI + 3)),
)
PERSON = st.one_of(st.lists(ROW, min_size=1, max_size=5), st.lists(ROW, min_size=20, max_size=60))
PROPERTY_QUERIES = [
    "SELECT COUNT(*), SUM(v), AVG(v), COUNT(DISTINCT pid) FROM t",
    "SELECT k, COUNT(*), SUM(v), AVG(n) FROM t GROUP BY k",
    "SELECT g, COUNT(*), SUM(n) FROM t GROUP BY g",
    "SELECT k, g, SUM(v - n), COUNT(v) FROM t WHERE v > -1 OR n IS NULL GROUP BY k, g",
]


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(people=st.lists(PERSON, min_size=1, max_size=6), victim=st.integers(min_value=0))
def test_random_neighbours_within_sensitivity(scratch: Engine, people: list[list[tuple[Any, ...]]],
                                              victim: int) -> None:
    victim %= len(people)
    rows = [(pid, *r) for pid, person in enumerate(people) for r in person]
    refill(scratch, [r for r in rows if r[0] != victim])
    without = [exact_measures(scratch, sql) for sql in PROPERTY_QUERIES]
    refill(scratch, rows)
    for sql, (plan_a, a) in zip(PROPERTY_QUERIES, without):
        plan_b, b = exact_measures(scratch, sql)
        assert plan_signature(plan_a) == plan_signature(plan_b)
        check_neighbours(plan_b, a, b)


# ------------------------------------------------------------------------------------------------
# the outcome (answer or error) must not depend on one person either


SAFE_OUTCOMES = [
    ("huge_multiplier", "SELECT SUM(v * 1e300) FROM t"),
    ("tiny_divisor", "SELECT COUNT(*) FROM t WHERE v / 1e-300 > 0"),
    ("int_times_two", "SELECT SUM(n * 2), SUM(-n), SUM(ABS(n)) FROM t"),
    ("rounding_inf", "SELECT COUNT(*) FROM t WHERE ROUND(v) > 0 AND FLOOR(v) < 3 AND CEIL(v) > -1"),
    ("mod_inf", "SELECT COUNT(*) FROM t WHERE v % 3 > 1"),
    ("text_functions", "SELECT COUNT(*) FROM t WHERE s LIKE 'sec%' OR LENGTH(s) > 3 OR UPPER(s) = 'X'"),
    ("text_vs_number_literal", "SELECT COUNT(*) FROM t WHERE s = 5"),
    ("date_part", "SELECT COUNT(*) FROM t WHERE EXTRACT(year FROM day) = 2025"),
    ("date_vs_valid_literal", "SELECT COUNT(*) FROM t WHERE day > '2025-03-01'"),
    ("case_on_hostile_value", "SELECT SUM(CASE WHEN v > 1e6 THEN n ELSE v END) FROM t"),
    ("open_key_of_hostile_person", "SELECT s, COUNT(*) FROM t GROUP BY s"),
]


@pytest.mark.parametrize("sql", [q for _, q in SAFE_OUTCOMES], ids=[i for i, _ in SAFE_OUTCOMES])
def test_outcome_does_not_depend_on_one_person(pair: tuple[Engine, Engine], sql: str) -> None:
    without, with_x = pair
    results = (outcome(without, sql), outcome(with_x, sql))
    assert results[0] == results[1], f"the outcome reveals the person: without {results[0]}, with {results[1]}"
    assert "BackendError" not in results


# Each of these fails in DuckDB only when some row reaches the failing operation — here only X's rows —
# so "answered" vs "BackendError" reveals whether X is in the data (or has some value). The error comes
# after the budget is charged, but the error itself is not covered by any noise.
LEAKY_OUTCOMES = [
    ("text_literal_vs_int_column", "SELECT COUNT(*) FROM t WHERE s = 'secret' AND n = 'abc'"),
    ("bad_date_literal", f"SELECT COUNT(*) FROM t WHERE pid = {X} AND day > 'garbage'"),
    ("text_column_vs_date_column", "SELECT COUNT(*) FROM t WHERE v > 1000 AND s = day"),
    ("text_column_is_true", "SELECT COUNT(*) FROM t WHERE v > 1000 AND s IS TRUE"),
    ("int_overflow_via_coalesce", "SELECT SUM(COALESCE(n, 0) + 1) FROM t"),
    ("int_overflow_gated_by_case",
     "SELECT COUNT(*) FROM t WHERE CASE WHEN v > 1000 THEN 9223372036854775807 + 1 ELSE 0 END > 0"),
    ("domain_filter_precedence", f"SELECT k = 'a' AS isa, COUNT(*) FROM t WHERE pid = {X} GROUP BY 1"),
]


@pytest.mark.parametrize("sql", [q for _, q in LEAKY_OUTCOMES], ids=[i for i, _ in LEAKY_OUTCOMES])
def test_outcome_does_not_depend_on_one_person_leaky(pair: tuple[Engine, Engine], sql: str) -> None:
    without, with_x = pair
    results = (outcome(without, sql), outcome(with_x, sql))
    assert results[0] == results[1], f"the outcome reveals the person: without {results[0]}, with {results[1]}"
    assert "BackendError" not in results


# ------------------------------------------------------------------------------------------------
# plans for extreme expressions: refused with a typed error, or noised with a finite positive scale

EXTREME_PLANS = [
    ("huge_but_finite", "SELECT SUM(v * 1e300) FROM t", None),
    ("huge_avg", "SELECT AVG(v * 1e300 - v * 1e300) FROM t", None),
    ("zero_interval", "SELECT SUM(v * 0), AVG(v * 0 + 3) FROM t", None),
    ("nan_interval", "SELECT SUM(v * 1e308 * 0) FROM t",
     "privacy bug: [-inf, inf] * 0 gives the clamping interval [nan, nan]; the plan calls the measure "
     "data-independent (sensitivity 0, no noise) and emits the bare identifier `nan` as clamp bound "
     "(see test_nan_clamp_bound_releases_a_column_without_noise)"),
    ("infinite_interval", "SELECT SUM(v * 1e308 * 1e308) FROM t",
     "bug: the clamping interval is [-inf, inf]; the planner raises a bare ValueError (sensitivity nan) "
     "instead of a PrivsqlError (earlier it planned the measure with noise scale 0)"),
    ("overflowing_square", "SELECT VARIANCE(v * 1e200) FROM t",
     "bug: the squared interval overflows; the planner raises a bare OverflowError instead of a PrivsqlError"),
]


def _extreme_params() -> list[Any]:
    out = []
    for ident, sql, bug in EXTREME_PLANS:
        del bug  # the bugs these cases recorded are fixed; the reasons stay as documentation
        out.append(pytest.param(sql, id=ident))
    return out


@pytest.mark.parametrize("sql", _extreme_params())
def test_extreme_expressions_plan_safely(pair: tuple[Engine, Engine], sql: str) -> None:
    _, with_x = pair
    try:
        prepared = with_x.prepare(sql, epsilon=1.0)
    except E.PrivsqlError:
        return  # refused up front: fine
    check_contract(prepared.plan)
    for m in prepared.plan.measures:
        assert math.isfinite(m.sensitivity) and math.isfinite(m.unit) and math.isfinite(m.scale)


def test_nan_clamp_bound_releases_a_column_without_noise(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "p.csv", ("pid", "x", "nan"), [(i, 0.5, i * 1000) for i in range(1, 21)])
    text = yaml.safe_dump({
        "budget_store": {"kind": "sqlite", "path": str(tmp_path / "budget.sqlite")},
        "cache": {"enabled": False},
        "tables": {"p": {"source": str(csv), "privacy_unit": "pid", "one_row_per_unit": True,
                         "columns": {"pid": "int", "x": {"type": "float", "lower": -1, "upper": 1},
                                     "nan": "float"}}},
        "analysts": {"alice": {"epsilon": 100.0}},
    })
    with Engine(parse_config(text, base_dir=tmp_path)) as e:
        sql = "SELECT SUM(x * 1e308 * 1e308 * 0) FROM p"
        try:
            answers = {e.execute(sql, analyst="alice", epsilon=1.0).rows[0][0] for _ in range(3)}
        except E.PrivsqlError:
            return  # refused: safe
        assert 210_000 not in answers, "SUM of the unbounded column `nan` released exactly, without noise"


def test_zero_noise_boolean_equality_key_counts_every_row(pair: tuple[Engine, Engine], no_noise: None) -> None:
    without, _ = pair
    got = dict(answer(without, "SELECT w = 1 AS one, COUNT(*) FROM u GROUP BY 1"))
    truth = {True: sum(1 for r in base_u_rows() if r[3] == 1), False: sum(1 for r in base_u_rows() if r[3] != 1)}
    assert got == truth
