"""Red-team the query validator: hostile or unsupported queries are refused up front.

Every case asserts three things (DESIGN.md, "Refusals and errors"):

* the right ``privsql.errors`` class (so the right SQLSTATE on the wire);
* a one-line message that names the offending part of the query;
* that nothing was charged: the analyst's spent ε/δ, query count and ledger are
  unchanged (a refusal happens before the budget reservation and before any
  data is read).

One engine over the sample data is built per module, with a fresh budget file.

Decisions documented here:

* ``now()`` / ``current_date`` and ``to_date`` / ``to_timestamp`` of literals are
  evaluated once at plan time into DATE/TIMESTAMP literals (``privsql/sql/fold.py``,
  issue 12: BI tools' time-range filters); the folded statement is what is checked,
  ledgered and cached. The same functions on columns, or with other formats, stay refused.
* ``LIMIT n`` / ``OFFSET n`` *with* aggregates are post-processing of noisy
  groups and are answered; only non-literal LIMIT/OFFSET and LIMIT on raw rows
  are refused.

Cases marked ``xfail(strict=True)`` are known bugs (listed in the red-team
report); "privacy bug" marks the ones that leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from privsql import errors as E
from privsql.config import parse_config
from privsql.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "privsql.yaml"


def build_engine(tmp: Path) -> Engine:
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["budget_store"] = {"kind": "sqlite", "path": str(tmp / "budget.sqlite")}
    raw["cache"] = {"enabled": False}
    for table in raw["tables"].values():
        if table.get("source"):
            table["source"] = str((ROOT / table["source"]).resolve())
    return Engine(parse_config(yaml.safe_dump(raw), base_dir=ROOT))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    e = build_engine(tmp_path_factory.mktemp("refusals"))
    yield e
    e.close()


def snapshot(engine: Engine, analyst: str) -> tuple[Any, ...]:
    b = engine.budget(analyst)
    ledger = tuple((x.id, x.outcome, x.epsilon, x.delta) for x in engine.ledger(analyst, limit=100_000))
    return (b.epsilon_spent, b.delta_spent, b.queries, ledger)


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    error: type[E.PrivsqlError] | tuple[type[E.PrivsqlError], ...]
    needles: tuple[str, ...] = ()  # each must appear in the message (case-insensitive)
    kwargs: dict[str, Any] = field(default_factory=dict)
    position: bool = False  # the error must carry a 1-based position into the SQL text
    marks: tuple[Any, ...] = ()


def xfail(reason: str) -> tuple[Any, ...]:
    return (pytest.mark.xfail(strict=True, reason=reason),)


DEEP_PARENS = "SELECT COUNT(*) FROM people WHERE " + "(" * 3000 + "age > 1" + ")" * 3000
LONG_AND = "SELECT COUNT(*) FROM people WHERE " + " AND ".join(["age > 1"] * 3000)
LONG_SUM = "SELECT SUM(" + " + ".join(["age"] * 3000) + ") FROM people"

CASES = [
    # ---- raw rows and individual values ------------------------------------------------
    Case("select_star", "SELECT * FROM people", E.PrivacyRefused, ("select *",)),
    Case("select_age", "SELECT age FROM people", E.PrivacyRefused, ('"age"', "group by")),
    Case("select_pid", "SELECT pid FROM people", E.PrivacyRefused, ('"pid"',)),
    Case("from_only", "FROM people", E.PrivacyRefused, ("select *",)),
    Case("table_statement", "TABLE people", E.PrivacyRefused, ("select *",)),
    Case("qualified_star", "SELECT people.* FROM people", E.PrivacyRefused, ("select *",)),
    Case("whole_row_ref", "SELECT people FROM people", E.UndefinedColumn, ('"people"',)),
    Case("whole_row_count", "SELECT COUNT(people) FROM people", E.UndefinedColumn, ('"people"',)),
    Case("count_qualified_star", "SELECT COUNT(people.*) FROM people", E.PrivacyRefused, ("count(people.*)",)),
    Case("raw_column_next_to_aggregate", "SELECT COUNT(*), age FROM people", E.PrivacyRefused, ('"age"',)),
    Case("raw_column_in_output_expr", "SELECT COUNT(*) + income FROM people", E.PrivacyRefused, ('"income"',)),
    Case("distinct", "SELECT DISTINCT sex FROM people", E.PrivacyRefused, ("distinct",)),
    Case("distinct_on", "SELECT DISTINCT ON (sex) sex, COUNT(*) FROM people GROUP BY sex", E.PrivacyRefused,
         ("distinct",)),
    Case("limit_without_aggregate", "SELECT age FROM people LIMIT 1", E.PrivacyRefused, ('"age"',)),
    Case("select_into", "SELECT COUNT(*) INTO t FROM people", E.PrivacyRefused, ("into",)),
    Case("for_update", "SELECT COUNT(*) FROM people FOR UPDATE", E.PrivacyRefused, ("for update",)),
    # ---- grouping on the privacy unit ----------------------------------------------------
    Case("group_by_pid", "SELECT pid, COUNT(*) FROM people GROUP BY pid", E.PrivacyRefused, ("privacy unit", "pid")),
    Case("group_by_pid_many_rows", "SELECT COUNT(*) FROM visits GROUP BY pid", E.PrivacyRefused, ("pid",)),
    Case("group_by_pid_expression", "SELECT COUNT(*) FROM visits GROUP BY pid % 10", E.PrivacyRefused, ("pid",)),
    Case("group_by_ordinal_pid", "SELECT pid + 0, COUNT(*) FROM people GROUP BY 1", E.PrivacyRefused, ("pid",)),
    Case("group_by_open_key_without_delta", "SELECT income, COUNT(*) FROM people GROUP BY income", E.PrivacyRefused,
         ("income", "δ"), kwargs={"delta": 0.0}),
    # ---- window functions and friends ----------------------------------------------------
    Case("window_count", "SELECT COUNT(*) OVER () FROM people", E.PrivacyRefused, ("window", "over")),
    Case("window_row_number", "SELECT ROW_NUMBER() OVER (ORDER BY age) FROM people", E.PrivacyRefused,
         ("window", "row_number")),
    Case("window_clause", "SELECT COUNT(*) FROM people WINDOW w AS (PARTITION BY sex)", E.PrivacyRefused,
         ("window",)),
    Case("qualify", "SELECT COUNT(*) FROM people QUALIFY COUNT(*) > 1", E.PrivacyRefused, ("qualify",)),
    # ---- unsupported aggregates ------------------------------------------------------------
    Case("string_agg", "SELECT string_agg(sex, ',') FROM people", E.UnsupportedQuery, ("aggregate", "not supported")),
    Case("array_agg", "SELECT array_agg(age) FROM people", E.UnsupportedQuery, ("array_agg",)),
    Case("list_agg", "SELECT list(age) FROM people", (E.PrivacyRefused, E.UnsupportedQuery), ("list",)),
    Case("mode", "SELECT mode(age) FROM people", E.UnsupportedQuery, ("mode",)),
    Case("stddev_pid_unbounded", "SELECT stddev(pid) FROM people", E.PrivacyRefused, ("stddev(pid)", "lower and upper")),
    Case("any_value", "SELECT any_value(age) FROM people", E.UnsupportedQuery, ("any_value",)),
    Case("quantile_fraction_not_constant", "SELECT quantile_cont(income, age) FROM people", E.PrivacyRefused,
         ("constant fraction",)),
    Case("quantile_fraction_out_of_range", "SELECT percentile_cont(1.5) WITHIN GROUP (ORDER BY income) FROM people",
         E.PrivacyRefused, ("between 0 and 1",)),
    Case("median_unbounded", "SELECT median(pid) FROM people", E.PrivacyRefused, ("lower and upper",)),
    Case("arg_max", "SELECT arg_max(pid, income) FROM people", E.UnsupportedQuery, ("arg_max",)),
    Case("count_distinct_two_columns", "SELECT COUNT(DISTINCT age, sex) FROM people", E.UnsupportedQuery,
         ("one expression",)),
    Case("sum_distinct", "SELECT SUM(DISTINCT age) FROM people", E.UnsupportedQuery, ("sum(distinct",)),
    Case("nested_aggregate", "SELECT SUM(COUNT(*)) FROM people", E.PrivacyRefused, ("nested",)),
    Case("aggregate_in_where", "SELECT COUNT(*) FROM people WHERE COUNT(*) > 1", E.PrivacyRefused, ("where",)),
    Case("aggregate_in_group_by", "SELECT COUNT(*) FROM people GROUP BY COUNT(*)", E.PrivacyRefused,
         ("group by", "count(*)")),
    Case("aggregate_filter_with_distinct", "SELECT COUNT(DISTINCT age) FILTER (WHERE pid = 1) FROM people",
         (E.PrivacyRefused, E.UnsupportedQuery), ("filter",)),
    # ROLLUP/CUBE/GROUPING SETS: validate.py means to raise UnsupportedQuery, but sqlglot 30 puts them in
    # group.expressions, so the generic refusal (PrivacyRefused) fires; both are refusals.
    Case("rollup", "SELECT sex, COUNT(*) FROM people GROUP BY ROLLUP(sex)", (E.UnsupportedQuery, E.PrivacyRefused),
         ("rollup",)),
    Case("cube", "SELECT sex, COUNT(*) FROM people GROUP BY CUBE(sex)", (E.UnsupportedQuery, E.PrivacyRefused),
         ("cube",)),
    Case("grouping_sets", "SELECT COUNT(*) FROM people GROUP BY GROUPING SETS ((sex), ())",
         (E.UnsupportedQuery, E.PrivacyRefused), ("grouping sets",)),
    # ---- unbounded sums and type confusion ---------------------------------------------------
    Case("sum_pid_unbounded", "SELECT SUM(pid) FROM people", E.PrivacyRefused, ("sum(pid)", "lower and upper")),
    Case("avg_pid_unbounded", "SELECT AVG(pid + 1) FROM people", E.PrivacyRefused, ("pid",)),
    Case("sum_length_unbounded", "SELECT SUM(LENGTH(sex)) FROM people", E.PrivacyRefused, ("bounded",)),
    Case("sum_text", "SELECT SUM(sex) FROM people", (E.DatatypeMismatch, E.PrivacyRefused), ("sum(sex)", "numeric")),
    Case("avg_text", "SELECT AVG(sex) FROM people", (E.DatatypeMismatch, E.PrivacyRefused), ("avg(sex)", "numeric")),
    Case("sum_date", "SELECT SUM(day) FROM visits", (E.DatatypeMismatch, E.PrivacyRefused), ("sum(day)",)),
    Case("compare_num_with_text_column", "SELECT COUNT(*) FROM people WHERE age = sex", E.DatatypeMismatch,
         ("age = sex",)),
    Case("case_mixes_types", "SELECT COUNT(*) FROM people WHERE CASE WHEN age > 1 THEN sex ELSE 1 END = '1'",
         E.DatatypeMismatch, ("case",)),
    Case("coalesce_mixes_types", "SELECT COUNT(*) FROM people WHERE COALESCE(sex, age) = '1'", E.DatatypeMismatch,
         ("coalesce",)),
    Case("between_num_and_text", "SELECT COUNT(*) FROM people WHERE age BETWEEN '1' AND 'x'", E.DatatypeMismatch,
         ("between",)),
    Case("not_on_number", "SELECT COUNT(*) FROM people WHERE NOT age", E.DatatypeMismatch, ("age",)),
    Case("where_not_boolean", "SELECT COUNT(*) FROM people WHERE age", (E.DatatypeMismatch, E.PrivacyRefused),
         ("where", "age")),
    Case("like_on_number", "SELECT COUNT(*) FROM people WHERE age LIKE '1%'", E.DatatypeMismatch, ("like",)),
    Case("date_arithmetic", "SELECT COUNT(*) FROM visits WHERE day + 1 > day", E.DatatypeMismatch, ("day",)),
    Case("date_interval", "SELECT COUNT(*) FROM visits WHERE day - INTERVAL '1 day' > day", E.DatatypeMismatch,
         ("day",)),
    Case("is_number", "SELECT COUNT(*) FROM people WHERE age IS 5", E.PrivacyRefused, ("is",)),
    Case("extract_epoch", "SELECT COUNT(*) FROM visits WHERE EXTRACT(epoch FROM day) > 1", E.UnsupportedQuery,
         ("epoch",)),
    Case("row_constructor", "SELECT COUNT(*) FROM people WHERE (age, sex) = (1, '1')", E.PrivacyRefused,
         ("(age, sex)",)),
    # ---- data-dependent errors: division, casts ---------------------------------------------
    Case("div_by_column_in_where", "SELECT COUNT(*) FROM people WHERE 1/(age-40) > 0", E.PrivacyRefused,
         ("division", "age - 40")),
    Case("div_by_column_in_sum", "SELECT SUM(1/(age-40)) FROM people", E.PrivacyRefused, ("division", "age - 40")),
    Case("div_income_by_age", "SELECT SUM(income / age) FROM people", E.PrivacyRefused, ("division", "age")),
    Case("mod_by_column", "SELECT SUM(income % age) FROM people", E.PrivacyRefused, ("age",)),
    Case("div_by_zero_literal", "SELECT SUM(income / 0) FROM people", E.PrivacyRefused, ("division by zero",)),
    Case("round_by_column", "SELECT COUNT(*) FROM people WHERE round(age, age) > 1", E.PrivacyRefused, ("round",)),
    Case("cast_text_to_int", "SELECT COUNT(*) FROM people WHERE CAST(sex AS INT) = 1", E.PrivacyRefused,
         ("cast", "sex")),
    Case("try_cast_text_to_int", "SELECT COUNT(*) FROM people WHERE TRY_CAST(sex AS INT) = 1", E.PrivacyRefused,
         ("cast", "sex")),
    Case("cast_income_to_int", "SELECT SUM(CAST(income AS INT)) FROM people", E.PrivacyRefused, ("cast", "income")),
    # these two must stay refused once CAST(... AS DOUBLE) is allowed again: a DECIMAL(p, s) or float32
    # target overflows on large values, i.e. fails only on some rows
    Case("cast_to_small_decimal", "SELECT COUNT(*) FROM people WHERE CAST(income AS DECIMAL(3,0)) > 0",
         E.PrivacyRefused, ("cast", "income")),
    Case("cast_to_float32", "SELECT COUNT(*) FROM people WHERE CAST(income AS REAL) > 0", E.PrivacyRefused,
         ("cast", "income")),
    # ---- sub-queries, set operations, CTEs, joins ----------------------------------------------
    Case("subquery_in_from", "SELECT COUNT(*) FROM (SELECT * FROM people) t", (E.PrivacyRefused, E.UnsupportedQuery), ("sub-quer",)),
    Case("scalar_subquery_in_where", "SELECT COUNT(*) FROM people WHERE age > (SELECT 1)", E.UnsupportedQuery,
         ("sub-quer",)),
    Case("aggregate_subquery_in_where", "SELECT COUNT(*) FROM people WHERE age > (SELECT AVG(age) FROM people)",
         (E.UnsupportedQuery, E.PrivacyRefused), ("where",)),
    Case("subquery_in_select", "SELECT (SELECT COUNT(*) FROM people) FROM people", E.UnsupportedQuery,
         ("sub-quer", "select")),
    Case("subquery_in_having", "SELECT COUNT(*) AS n FROM people HAVING n > (SELECT COUNT(*) FROM people)",
         E.UnsupportedQuery, ("sub-quer", "having")),
    Case("exists", "SELECT COUNT(*) FROM people WHERE EXISTS (SELECT 1 FROM people WHERE pid = 1)",
         E.UnsupportedQuery, ("sub-quer", "exists")),
    Case("in_subquery", "SELECT COUNT(*) FROM people WHERE pid IN (SELECT pid FROM visits)", E.UnsupportedQuery,
         ("in", "sub-query")),
    Case("all_subquery", "SELECT COUNT(*) FROM people WHERE age > ALL (SELECT 1)",
         (E.UnsupportedQuery, E.PrivacyRefused), ("all (select 1)",)),
    Case("union", "SELECT COUNT(*) FROM people UNION SELECT COUNT(*) FROM visits", E.UnsupportedQuery, ("union",)),
    Case("intersect", "SELECT COUNT(*) FROM people INTERSECT SELECT COUNT(*) FROM people", E.UnsupportedQuery,
         ("intersect",)),
    Case("cte", "WITH t AS (SELECT * FROM people) SELECT COUNT(*) FROM t", (E.UnsupportedQuery, E.UndefinedTable),
         ("t",)),
    Case("cte_shadowing_a_table", "WITH people AS (SELECT * FROM visits) SELECT COUNT(*) FROM people",
         E.UnsupportedQuery, ("with",)),
    # joins: private⋈public and private⋈private *on the privacy unit* are answered; everything else is refused
    Case("comma_join", "SELECT COUNT(*) FROM people, visits", E.PrivacyRefused, ("cross join",)),
    Case("join_private_on_other_column", "SELECT COUNT(*) FROM people JOIN visits ON people.age = visits.pid",
         E.PrivacyRefused, ("privacy unit",)),
    Case("self_join_not_on_unit", "SELECT COUNT(*) FROM people p1 JOIN people p2 ON p1.age = p2.age",
         E.PrivacyRefused, ("privacy unit",)),
    Case("join_unit_or_anything", "SELECT COUNT(*) FROM people JOIN visits ON people.pid = visits.pid OR "
         "visits.cost > 1999", E.PrivacyRefused, ("privacy unit",)),
    Case("join_unit_off_by_one", "SELECT COUNT(*) FROM people JOIN visits ON people.pid = visits.pid + 1",
         E.PrivacyRefused, ("privacy unit",)),
    Case("join_unit_modulo", "SELECT COUNT(*) FROM people JOIN visits ON people.pid = visits.pid % 10",
         E.PrivacyRefused, ("privacy unit",)),
    Case("join_unit_inequality", "SELECT COUNT(*) FROM people JOIN visits ON people.pid <> visits.pid",
         E.PrivacyRefused, ("privacy unit",)),
    Case("join_is_not_distinct_from", "SELECT COUNT(*) FROM people JOIN visits ON people.pid IS NOT DISTINCT FROM "
         "visits.pid", E.PrivacyRefused, ("privacy unit",)),
    Case("join_unit_in_list", "SELECT COUNT(*) FROM people JOIN visits ON people.pid IN (visits.pid, visits.pid + 1)",
         E.PrivacyRefused, ("privacy unit",)),
    Case("join_unit_inside_case", "SELECT COUNT(*) FROM people JOIN visits ON CASE WHEN true THEN "
         "people.pid = visits.pid ELSE true END", E.PrivacyRefused, ("privacy unit",)),
    Case("join_left_unit_or_null", "SELECT COUNT(*) FROM people LEFT JOIN visits ON people.pid = visits.pid OR "
         "visits.pid IS NULL", E.PrivacyRefused, ("privacy unit",)),
    Case("join_private_on_true", "SELECT COUNT(*) FROM people JOIN visits ON true", E.PrivacyRefused,
         ("privacy unit",)),
    Case("self_join_on_unit", "SELECT COUNT(*) FROM visits a JOIN visits b ON a.pid = b.pid",
         E.PrivacyRefused, ("only once",)),
    Case("third_table_not_on_unit", "SELECT COUNT(*) FROM people p JOIN visits v ON p.pid = v.pid "
         "JOIN visits v2 ON p.age = v2.pid", E.PrivacyRefused, ("privacy unit",)),
    Case("right_join", "SELECT COUNT(*) FROM people RIGHT JOIN visits ON people.pid = visits.pid",
         E.UnsupportedQuery, ("right join",)),
    Case("full_join", "SELECT COUNT(*) FROM people FULL JOIN visits ON people.pid = visits.pid",
         E.UnsupportedQuery, ("full join",)),
    Case("natural_join", "SELECT COUNT(*) FROM people NATURAL JOIN visits", E.UnsupportedQuery, ("natural join",)),
    Case("duplicate_alias", "SELECT COUNT(*) FROM visits v JOIN depts v ON v.dept = v.dept", E.PrivacyRefused,
         ('"v"',)),
    Case("join_raw_rows", "SELECT * FROM depts JOIN visits ON visits.dept = depts.dept", E.PrivacyRefused,
         ("select *",)),
    Case("join_raw_private_column", "SELECT visits.cost FROM visits JOIN depts USING (dept)", E.PrivacyRefused,
         ("cost",)),
    Case("lateral", "SELECT COUNT(*) FROM people, LATERAL (SELECT 1) t", (E.PrivacyRefused, E.UnsupportedQuery),
         ("lateral",)),
    Case("public_string_agg", "SELECT string_agg(dept, ',') FROM depts", (E.PrivacyRefused, E.UnsupportedQuery),
         ("string_agg",)),
    Case("public_current_setting", "SELECT COUNT(*) FROM depts WHERE building = current_setting('x')", E.PrivacyRefused,
         ("current_setting",)),
    Case("public_subquery", "SELECT * FROM depts WHERE dept = (SELECT 'x')", E.UnsupportedQuery, ("sub-quer",)),
    # ---- files, table functions, catalogs ------------------------------------------------------
    Case("read_csv", "SELECT COUNT(*) FROM read_csv('/etc/passwd')", E.PrivacyRefused, ("read_csv",)),
    Case("read_parquet", "SELECT COUNT(*) FROM read_parquet('/tmp/x.parquet')", E.PrivacyRefused,
         ("read_parquet",)),
    Case("read_json_auto", "SELECT COUNT(*) FROM read_json_auto('/etc/passwd')", E.PrivacyRefused,
         ("read_json_auto",)),
    Case("query_function", "SELECT COUNT(*) FROM query('SELECT * FROM people')", E.PrivacyRefused, ("query(",)),
    Case("query_table_function", "SELECT COUNT(*) FROM query_table('people')", E.PrivacyRefused, ("query_table",)),
    Case("glob", "SELECT COUNT(*) FROM glob('/etc/*')", (E.PrivacyRefused, E.QuerySyntaxError), ("glob",)),
    Case("from_file_path", "SELECT COUNT(*) FROM '/work/main/sample_data/people.csv'", E.UndefinedTable,
         ("people.csv",)),
    Case("from_relative_file", "SELECT COUNT(*) FROM 'people.csv'", E.UndefinedTable, ("people.csv",)),
    Case("values_table", "SELECT COUNT(*) FROM (VALUES (1)) t(x)", E.PrivacyRefused, ("values",)),
    Case("generate_series", "SELECT COUNT(*) FROM generate_series(1, 10)", E.PrivacyRefused, ("generate_series",)),
    Case("duckdb_tables", "SELECT COUNT(*) FROM duckdb_tables()", E.PrivacyRefused, ("duckdb_tables",)),
    Case("duckdb_settings", "SELECT COUNT(*) FROM duckdb_settings()", E.PrivacyRefused, ("duckdb_settings",)),
    Case("other_schema", "SELECT COUNT(*) FROM other_schema.people", E.UndefinedTable, ("other_schema.people",)),
    Case("three_part_name", "SELECT COUNT(*) FROM memory.main.people", E.UnsupportedQuery,  # as PostgreSQL: 0A000
         ("cross-database", "memory.main.people")),
    Case("information_schema", "SELECT COUNT(*) FROM information_schema.tables", E.UndefinedTable,
         ("information_schema.tables",)),
    Case("pg_catalog", "SELECT COUNT(*) FROM pg_catalog.pg_class", E.UndefinedTable, ("pg_catalog.pg_class",)),
    Case("pg_class_unqualified", "SELECT COUNT(*) FROM pg_class", E.UndefinedTable, ("pg_class",)),
    Case("unknown_table", "SELECT COUNT(*) FROM nosuch", E.UndefinedTable, ("nosuch",)),
    Case("unknown_column", "SELECT COUNT(*) FROM people WHERE nosuch > 1", E.UndefinedColumn, ("nosuch",)),
    Case("unknown_qualifier", "SELECT COUNT(*) FROM people WHERE x.age > 1", E.UndefinedTable, ('"x"',)),
    Case("too_many_qualifiers", "SELECT COUNT(*) FROM people WHERE people.people.age > 1", E.UnsupportedQuery,
         ("people.people.age",)),
    Case("tablesample", "SELECT COUNT(*) FROM people TABLESAMPLE 10%", (E.UnsupportedQuery, E.PrivacyRefused),
         ("sample",)),
    Case("using_sample", "SELECT COUNT(*) FROM people USING SAMPLE 10", (E.UnsupportedQuery, E.PrivacyRefused),
         ("sample",)),
    # ---- non-SELECT statements (see test_statement_refusal_names_the_statement for the messages) --------
    Case("summarize", "SUMMARIZE people", E.PrivacyRefused, ("select",)),
    Case("describe", "DESCRIBE people", E.PrivacyRefused, ("describe",)),
    Case("pragma", "PRAGMA table_info('people')", E.PrivacyRefused, ("pragma",)),
    Case("set", "SET enable_external_access = true", E.PrivacyRefused, ("set",)),
    Case("reset", "RESET ALL", E.PrivacyRefused, ("select",)),
    Case("copy", "COPY people TO '/tmp/out.csv'", E.PrivacyRefused, ("copy",)),
    Case("attach", "ATTACH '/tmp/x.db' AS x", (E.PrivacyRefused, E.QuerySyntaxError), ("/tmp/x.db",)),
    Case("install", "INSTALL httpfs", E.PrivacyRefused, ("select",)),
    Case("load", "LOAD httpfs", E.PrivacyRefused, ("select",)),
    Case("explain", "EXPLAIN SELECT COUNT(*) FROM people", E.PrivacyRefused, ("select",)),
    Case("show_tables", "SHOW TABLES", E.PrivacyRefused, ("select",)),
    Case("call", "CALL pragma_version()", E.PrivacyRefused, ("select",)),
    Case("export_database", "EXPORT DATABASE '/tmp/x'", (E.PrivacyRefused, E.QuerySyntaxError), ("/tmp/x",)),
    Case("create_table_as", "CREATE TABLE t AS SELECT * FROM people", E.PrivacyRefused, ("create",)),
    Case("drop_table", "DROP TABLE people", E.PrivacyRefused, ("drop",)),
    Case("insert", "INSERT INTO people VALUES (1)", E.PrivacyRefused, ("insert",)),
    Case("update", "UPDATE people SET age = 1", E.PrivacyRefused, ("update",)),
    Case("delete", "DELETE FROM people", E.PrivacyRefused, ("delete",)),
    Case("values_statement", "VALUES (1)", E.PrivacyRefused, ("values",)),
    Case("multiple_statements", "SELECT COUNT(*) FROM people; DROP TABLE people", E.UnsupportedQuery,
         ("2 statements",)),
    # ---- functions outside the allow-list ------------------------------------------------------
    Case("current_setting", "SELECT COUNT(*) FROM people WHERE current_setting('x') = 'y'", E.PrivacyRefused,
         ("current_setting",)),
    Case("random_in_where", "SELECT COUNT(*) FROM people WHERE random() < 0.5", E.PrivacyRefused, ("rand",)),
    Case("to_date_of_a_column", "SELECT COUNT(*) FROM people WHERE to_date(sex, 'YYYY') > current_date",
         E.PrivacyRefused, ("to_date", "literals")),
    Case("to_timestamp_other_format", "SELECT COUNT(*) FROM visits WHERE day > to_timestamp('3 Dec', 'DD Mon')",
         E.UnsupportedQuery, ("to_timestamp", "format")),
    Case("order_by_random", "SELECT COUNT(*) FROM people ORDER BY random()", E.PrivacyRefused,
         ("order by", "random")),
    Case("hash_of_pid", "SELECT COUNT(*) FROM people WHERE hash(pid) % 2 = 0", E.PrivacyRefused, ("hash",)),
    Case("md5", "SELECT COUNT(*) FROM people WHERE md5(sex) = 'x'", E.PrivacyRefused, ("md5",)),
    Case("getenv", "SELECT COUNT(*) FROM people WHERE getenv('HOME') = 'x'", E.PrivacyRefused, ("getenv",)),
    Case("pg_read_file", "SELECT COUNT(*) FROM people WHERE pg_read_file('/etc/passwd') = 'x'", E.PrivacyRefused,
         ("pg_read_file",)),
    Case("current_user", "SELECT COUNT(*) FROM people WHERE sex = current_user", E.PrivacyRefused,
         ("current_user",)),
    Case("collate", "SELECT COUNT(*) FROM people WHERE sex = 'x' COLLATE \"C\"", E.PrivacyRefused, ("collate",)),
    Case("like_column_pattern", "SELECT COUNT(*) FROM people WHERE sex LIKE sex", E.PrivacyRefused,
         ("like", "literal")),
    Case("like_escape", "SELECT COUNT(*) FROM people WHERE sex LIKE '1%' ESCAPE '!'",
         (E.PrivacyRefused, E.UnsupportedQuery), ("escape",)),
    Case("similar_to", "SELECT COUNT(*) FROM people WHERE sex SIMILAR TO '1'", E.PrivacyRefused, ("similar to",)),
    Case("regexp_matches", "SELECT COUNT(*) FROM people WHERE regexp_matches(sex, '1')", E.PrivacyRefused,
         ("regexp_matches",)),
    Case("regex_operator", "SELECT COUNT(*) FROM people WHERE sex ~ '1'", E.PrivacyRefused, ("regexp",)),
    Case("any_array", "SELECT COUNT(*) FROM people WHERE age = ANY(ARRAY[1,2])", E.PrivacyRefused, ("any",)),
    Case("trim_column_chars", "SELECT COUNT(*) FROM people WHERE trim(sex, sex) = '1'", E.PrivacyRefused, ("trim",)),
    # ---- LIMIT / OFFSET / ORDER BY / HAVING trickery --------------------------------------------
    Case("limit_subquery", "SELECT COUNT(*) FROM people LIMIT (SELECT 1)", E.PrivacyRefused, ("limit",)),
    Case("limit_negative", "SELECT COUNT(*) FROM people LIMIT -1", E.PrivacyRefused, ("limit",)),
    Case("limit_fraction", "SELECT COUNT(*) FROM people LIMIT 1.5", E.PrivacyRefused, ("limit",)),
    Case("offset_column", "SELECT sex, COUNT(*) FROM people GROUP BY sex LIMIT 1 OFFSET age", E.PrivacyRefused,
         ("offset",)),
    Case("offset_subquery", "SELECT sex, COUNT(*) FROM people GROUP BY sex OFFSET (SELECT COUNT(*) FROM people)",
         E.PrivacyRefused, ("offset",)),
    Case("order_by_raw_column", "SELECT sex, COUNT(*) FROM people GROUP BY sex ORDER BY income", E.PrivacyRefused,
         ('"income"', "order by")),
    Case("having_raw_column", "SELECT sex, COUNT(*) FROM people GROUP BY sex HAVING income > 5", E.PrivacyRefused,
         ('"income"', "having")),
    Case("order_by_bad_position", "SELECT sex, COUNT(*) FROM people GROUP BY sex ORDER BY 5", E.UnsupportedQuery,
         ("position 5",)),
    Case("group_by_bad_position", "SELECT COUNT(*) FROM people GROUP BY 7", E.UnsupportedQuery, ("position 7",)),
    # ---- literals, nesting, odd bytes ---------------------------------------------------------
    Case("huge_literal", "SELECT COUNT(*) FROM people WHERE age > 1e400", E.UnsupportedQuery, ("1e400",)),
    Case("huge_literal_interval",
         "SELECT SUM(age * 1e308 * 1e308) FROM people", (E.PrivacyRefused, E.UnsupportedQuery), ("sum",)),
    Case("deep_parentheses", DEEP_PARENS, E.QuerySyntaxError, ("nested too deeply",)),
    Case("long_and_chain", LONG_AND, (E.QuerySyntaxError, E.UnsupportedQuery), ("too",)),
    Case("long_sum_chain", LONG_SUM, (E.QuerySyntaxError, E.UnsupportedQuery), ("too",)),
    Case("nul_byte", "SELECT COUNT(*) FROM people WHERE sex = 'a\x00'", E.QuerySyntaxError, ("nul",)),
    Case("empty", "", E.QuerySyntaxError, ("empty",)),
    Case("whitespace_only", "  \n\t ", E.QuerySyntaxError, ("empty",)),
    Case("comment_only", "-- nothing here", E.QuerySyntaxError, ("empty",)),
    Case("escape_string", "SELECT COUNT(*) FROM people WHERE sex = E'\\x00'", E.PrivacyRefused, ("e'",)),
    # ---- syntax errors carry a position -------------------------------------------------------
    Case("syntax_dangling_where", "SELECT COUNT(*) FROM people WHERE", E.QuerySyntaxError, ("where",),
         position=True),
    Case("syntax_typo", "SELEC COUNT(*) FROM people", E.QuerySyntaxError, ("syntax error",), position=True),
    Case("syntax_dangling_and", "SELECT COUNT(*) FROM people WHERE sex = 'a' AND", E.QuerySyntaxError, ("and",),
         position=True),
    Case("syntax_unterminated_string", "SELECT COUNT(*) FROM people WHERE sex = 'oops", E.QuerySyntaxError,
         ("syntax error", "unterminated"), position=True),
    Case("syntax_unterminated_comment", "SELECT COUNT(*) /* oops FROM people", E.QuerySyntaxError,
         ("unterminated comment",), position=True),
    # ---- parameters -----------------------------------------------------------------------------
    Case("placeholder_dollar_no_value", "SELECT COUNT(*) FROM people WHERE age > $1", E.InvalidParameter,
         ("parameter",)),
    Case("placeholder_qmark_no_value", "SELECT COUNT(*) FROM people WHERE age > ?", E.InvalidParameter,
         ("parameter",)),
    Case("placeholder_named_no_value", "SELECT COUNT(*) FROM people WHERE age > :age", E.InvalidParameter,
         ("parameter",)),
    Case("parameter_nan", "SELECT COUNT(*) FROM people WHERE age > $1", E.InvalidParameter, ("nan",),
         kwargs={"params": [float("nan")]}),
    Case("parameter_nul", "SELECT COUNT(*) FROM people WHERE sex = $1", E.InvalidParameter, ("nul",),
         kwargs={"params": ["a\x00"]}),
    Case("parameter_bad_type", "SELECT COUNT(*) FROM people WHERE sex = $1", E.InvalidParameter, ("object",),
         kwargs={"params": [object()]}),
    Case("parameter_too_many", "SELECT COUNT(*) FROM people WHERE age > $1", E.InvalidParameter, ("2",),
         kwargs={"params": [1, 2]}),
    Case("parameters_for_no_placeholder", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("no parameters",),
         kwargs={"params": [1]}),
    # ---- ε / δ / analyst ---------------------------------------------------------------------------
    Case("epsilon_zero", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("epsilon",), kwargs={"epsilon": 0}),
    Case("epsilon_negative", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("epsilon",),
         kwargs={"epsilon": -1}),
    Case("epsilon_nan", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("epsilon",),
         kwargs={"epsilon": float("nan")}),
    Case("epsilon_inf", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("epsilon",),
         kwargs={"epsilon": float("inf")}),
    Case("epsilon_above_query_max", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("exceeds",),
         kwargs={"epsilon": 11}),
    Case("delta_one", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("delta",),
         kwargs={"epsilon": 1, "delta": 1.0}),
    Case("delta_negative", "SELECT COUNT(*) FROM people", E.InvalidParameter, ("delta",),
         kwargs={"epsilon": 1, "delta": -0.1}),
    Case("unknown_analyst", "SELECT COUNT(*) FROM people", E.UnknownAnalyst, ("mallory",),
         kwargs={"analyst": "mallory"}),
    Case("budget_exhausted", "SELECT COUNT(*) FROM people", E.BudgetExhausted, ("bob", "ε"),
         kwargs={"analyst": "bob", "epsilon": 6}),
]


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.id, marks=c.marks) for c in cases]


def _message_ok(message: str, needles: tuple[str, ...]) -> list[str]:
    low = message.lower()
    return [n for n in needles if n.lower() not in low]


@pytest.mark.parametrize("case", _params(CASES))
def test_refused_before_any_charge(engine: Engine, case: Case) -> None:
    kwargs = dict(case.kwargs)
    analyst = kwargs.pop("analyst", "alice")
    kwargs.setdefault("epsilon", 0.01)
    budget_analyst = analyst if analyst in engine.config.analysts else "alice"
    before = snapshot(engine, budget_analyst)
    with pytest.raises(E.PrivsqlError) as info:
        engine.execute(case.sql, analyst=analyst, **kwargs)
    err = info.value
    assert snapshot(engine, budget_analyst) == before, "a refused query must not be charged or logged"
    assert not isinstance(err, (E.BackendError, E.QueryCanceled)), \
        f"refused only after running in the backend: {err!r}"
    assert isinstance(err, case.error), f"expected {case.error}, got {type(err).__name__}: {err}"
    assert "\n" not in err.message.strip(), "refusal messages are one line"
    missing = _message_ok(err.message, case.needles)
    assert not missing, f"message {err.message!r} does not name {missing}"
    if case.position:
        assert err.position is not None and 1 <= err.position <= max(1, len(case.sql))


def test_enough_cases() -> None:
    assert len([c for c in CASES if not c.marks]) >= 50
    assert len({c.id for c in CASES}) == len(CASES)


def test_explain_refuses_the_same_way(engine: Engine) -> None:
    before = snapshot(engine, "alice")
    for sql in ("SELECT * FROM people", "SELECT COUNT(*) FROM read_csv('/etc/passwd')",
                "SELECT pid, COUNT(*) FROM people GROUP BY pid"):
        with pytest.raises(E.PrivacyRefused):
            engine.explain(sql)
    assert snapshot(engine, "alice") == before


def test_the_charge_detector_works(engine: Engine) -> None:
    """Sanity check for the 'nothing charged' assertions: an answered query is charged and logged."""
    before = snapshot(engine, "alice")
    engine.execute("SELECT COUNT(*) FROM people", analyst="alice", epsilon=0.01)
    after = snapshot(engine, "alice")
    assert after[0] > before[0] and len(after[3]) == len(before[3]) + 1


# Statements refused with a message that names something else than the statement.
STATEMENT_MESSAGES = [
    ("SUMMARIZE people", "summarize"),   # today: "not ALIAS"
    ("INSTALL httpfs", "install"),       # today: "not ALIAS"
    ("CHECKPOINT", "checkpoint"),        # today: "not COLUMN"
    ("LOAD httpfs", "load"),             # today: "COMMAND is not allowed"
    ("EXPLAIN SELECT COUNT(*) FROM people", "explain"),
    ("SHOW TABLES", "show"),
    ("VACUUM", "vacuum"),
]


@pytest.mark.parametrize("sql, word", STATEMENT_MESSAGES, ids=[w for _, w in STATEMENT_MESSAGES])
def test_statement_refusal_names_the_statement(engine: Engine, sql: str, word: str) -> None:
    before = snapshot(engine, "alice")
    with pytest.raises(E.PrivacyRefused) as info:
        engine.execute(sql, analyst="alice", epsilon=0.01)
    assert snapshot(engine, "alice") == before
    assert word in info.value.message.lower()


# Queries whose *outcome* (answer vs backend error) depends on the data. Today they pass validation,
# are charged, and then fail in DuckDB only if some row reaches the failing operation, which reveals
# that row (here: whether person pid=1 exists / has some attribute). The safe behaviour is to refuse
# them before anything runs (or to rewrite them so they cannot fail). See also
# test_privacy_bounds.py::test_outcome_does_not_depend_on_one_person.
DATA_DEPENDENT_ERRORS = [
    ("text_literal_vs_int_column", "SELECT COUNT(*) FROM people WHERE pid = 1 AND age = 'abc'"),
    ("bad_date_literal", "SELECT COUNT(*) FROM visits WHERE pid = 1 AND day > 'garbage'"),
    ("text_column_vs_date_column", "SELECT COUNT(*) FROM visits WHERE pid = 1 AND dept = day"),
    ("date_in_text_list", "SELECT COUNT(*) FROM visits WHERE pid = 1 AND day IN (dept)"),
    ("text_column_is_true", "SELECT COUNT(*) FROM visits WHERE pid = 1 AND dept IS TRUE"),
    ("int_overflow_via_coalesce",
     "SELECT SUM(COALESCE(CASE WHEN pid = 1 THEN age END, 0) * 922337203685477580) FROM people"),
    ("int_overflow_gated_by_case",
     "SELECT COUNT(*) FROM people WHERE CASE WHEN pid = 1 AND income < 100000 "
     "THEN 9223372036854775807 + 1 ELSE 0 END > 0"),
    ("text_vs_date_in_join_condition",
     "SELECT COUNT(*) FROM visits JOIN depts ON visits.pid = 1 AND visits.dept = visits.day"),
    ("public_int_column_vs_text_literal",
     "SELECT COUNT(*) FROM visits JOIN depts ON visits.dept = depts.dept WHERE visits.pid = 1 AND depts.floor = 'x'"),
    ("domain_filter_precedence", "SELECT sex = 'x' AS s, COUNT(*) FROM people WHERE pid = 1 GROUP BY 1"),
]


@pytest.mark.parametrize("sql", [s for _, s in DATA_DEPENDENT_ERRORS], ids=[i for i, _ in DATA_DEPENDENT_ERRORS])
def test_data_dependent_error_is_caught_up_front(engine: Engine, sql: str) -> None:
    before = snapshot(engine, "alice")
    try:
        engine.execute(sql, analyst="alice", epsilon=0.01)
    except (E.BackendError, E.QueryCanceled) as err:
        pytest.fail(f"the backend failed after the query was charged (a data-dependent error): {err}")
    except E.PrivsqlError:
        assert snapshot(engine, "alice") == before  # refused up front: fine


# Not hostile: these should be answered (listed in the red-team report).
SHOULD_BE_ANSWERED = [
    ("cast_number_to_double", "SELECT COUNT(*) FROM people WHERE CAST(age AS DOUBLE) > 30"),
    ("cast_number_to_text", "SELECT COUNT(*) FROM people WHERE age::text = '30'"),
    ("date_literal", "SELECT COUNT(*) FROM visits WHERE day >= DATE '2025-03-01'"),
    ("min", "SELECT min(age) FROM people"),
    ("count_distinct", "SELECT COUNT(DISTINCT age) FROM people"),
    ("aggregate_filter_clause", "SELECT COUNT(*) FILTER (WHERE pid = 1) FROM people"),
    ("max", "SELECT max(income) FROM people"),
    ("median", "SELECT median(income) FROM people"),
    ("percentile_within_group", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY income) FROM people"),
]


@pytest.mark.parametrize("sql", [s for _, s in SHOULD_BE_ANSWERED], ids=[i for i, _ in SHOULD_BE_ANSWERED])
def test_should_be_answered(engine: Engine, sql: str) -> None:
    result = engine.execute(sql, analyst="alice", epsilon=0.01)
    assert len(result.rows) == 1


def test_public_table_is_answered_exactly_and_free(engine: Engine) -> None:
    before = snapshot(engine, "alice")
    assert engine.execute("SELECT COUNT(*) FROM depts", analyst="alice").rows == [(6,)]
    assert snapshot(engine, "alice")[:3] == before[:3]
