"""Adversarial data for the generative differential test, loaded on DuckDB, PostgreSQL and Spark.

Three tables (the schema the grammar in ``grammar.py`` writes queries against):

* ``adv`` (private, unit ``pid``, max_groups 2, max_rows 2): one column of every config type,
  with declared bounds / public values where the type allows them:
  ``i`` int [-100, 100], ``n`` int [0, 3] with values 0..3, ``f`` float [-1000, 1000],
  ``g`` float (no bounds), ``t`` text with values a/b/c, ``s`` text, ``b`` bool, ``d`` date,
  ``ts`` timestamp;
* ``per`` (private, one row per person, joined on ``pid``): ``j`` int [0, 10], ``v`` float
  [0, 100], ``w`` text, ``e`` date;
* ``pub`` (public): ``k`` text, ``grp`` text, ``m`` int.

Ordinary people (pids 1..24, some with several rows) hold ordinary values. Every *adversarial*
row is its own person (pid ≥ 1000, one ``adv`` row and one ``per`` row) and holds one extreme
value in one column (``ADVERSARIAL``), all other columns ordinary; one person holds NULL in
every column. Extremes are written as SQL per backend and loaded straight into backend tables
(never through the CSV loader), so the data is whatever the backend can hold, declared bounds
and values notwithstanding: int64 min/max, ±1e308, ±max double, −0.0, NaN, ±inf, subnormals,
dates 0001-01-01 / 9999-12-31, dates and timestamps beyond the TIMESTAMP range and BC, the
'infinity' dates of PostgreSQL and DuckDB, empty and 1 MB strings, trailing/leading blanks,
and values outside the declared bounds and domains.

``World`` builds one backend's tables and hands out an engine on a *variant* of the data:
D (everything), D minus some people, or the empty table. DuckDB and PostgreSQL rewrite the
tables in place under one engine (DELETE / INSERT from a pristine copy); Spark snapshots each
source at start-up, so each variant gets its own engine over its own temporary view.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from privsql.config import parse_config
from privsql.engine import Engine

BACKENDS = ("duckdb", "postgres", "spark")
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ANALYST = "alice"
MB = 1 << 20

# ----------------------------------------------------------------------------------------- schema
ADV_COLUMNS: dict[str, dict[str, Any]] = {
    "pid": {"type": "int"},
    "i": {"type": "int", "lower": -100, "upper": 100},
    "n": {"type": "int", "lower": 0, "upper": 3, "values": [0, 1, 2, 3]},
    "f": {"type": "float", "lower": -1000.0, "upper": 1000.0},
    "g": {"type": "float"},
    "t": {"type": "text", "values": ["a", "b", "c"]},
    "s": {"type": "text"},
    "b": {"type": "bool"},
    "d": {"type": "date"},
    "ts": {"type": "timestamp"},
}
PER_COLUMNS: dict[str, dict[str, Any]] = {
    "pid": {"type": "int"},
    "j": {"type": "int", "lower": 0, "upper": 10},
    "v": {"type": "float", "lower": 0.0, "upper": 100.0},
    "w": {"type": "text"},
    "e": {"type": "date"},
}
PUB_COLUMNS: dict[str, dict[str, Any]] = {"k": {"type": "text"}, "grp": {"type": "text"}, "m": {"type": "int"}}
SQL_TYPES = {
    "duckdb": {"int": "BIGINT", "float": "DOUBLE", "text": "VARCHAR", "bool": "BOOLEAN", "date": "DATE",
               "timestamp": "TIMESTAMP"},
    "postgres": {"int": "BIGINT", "float": "DOUBLE PRECISION", "text": "TEXT", "bool": "BOOLEAN", "date": "DATE",
                 "timestamp": "TIMESTAMP"},
    "spark": {"int": "BIGINT", "float": "DOUBLE", "text": "STRING", "bool": "BOOLEAN", "date": "DATE",
              "timestamp": "TIMESTAMP"},
}


@dataclass(frozen=True)
class Value:
    """One stored value, as SQL per backend (None: the backend cannot store it)."""

    label: str
    duckdb: str | None
    postgres: str | None
    spark: str | None

    def sql(self, backend: str) -> str | None:
        return getattr(self, backend)


def same(label: str, sql: str) -> Value:
    return Value(label, sql, sql, sql)


def text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def cast(expr: str, to: str) -> str:
    return f"CAST({expr} AS {to})"


def _num(v: str, ctype: str) -> Value:
    return same(v, cast(text(v), "BIGINT" if ctype == "int" else "DOUBLE"))


def _pg_double(v: str) -> str:
    return cast(text(v), "DOUBLE PRECISION")


def _float(label: str, literal: str) -> Value:
    return Value(label, cast(text(literal), "DOUBLE"), _pg_double(literal), cast(text(literal), "DOUBLE"))


def _date(label: str, duck: str | None, pg: str | None, spark_days: int | None) -> Value:
    return Value(label, cast(text(duck), "DATE") if duck else None, cast(text(pg), "DATE") if pg else None,
                 f"date_from_unix_date({spark_days})" if spark_days is not None else None)


def _ts(label: str, duck: str | None, pg: str | None, spark_micros: int | None) -> Value:
    return Value(label, cast(text(duck), "TIMESTAMP") if duck else None,
                 cast(text(pg), "TIMESTAMP") if pg else None,
                 f"timestamp_micros({spark_micros})" if spark_micros is not None else None)


INT_EXTREMES = [_num("9223372036854775807", "int"), _num("-9223372036854775808", "int"),
                _num("9223372036854775806", "int"), _num("4294967296", "int"), _num("-2147483649", "int"),
                _num("101", "int"), _num("-101", "int"), _num("0", "int")]
FLOAT_EXTREMES = [_float("1e308", "1e308"), _float("-1e308", "-1e308"),
                  _float("max", "1.7976931348623157e308"), _float("-max", "-1.7976931348623157e308"),
                  _float("-0.0", "-0.0"), _float("NaN", "NaN"), _float("inf", "Infinity"),
                  _float("-inf", "-Infinity"), _float("subnormal", "5e-324"), _float("1e-308", "1e-308"),
                  _float("1e15+1", "1000000000000001"), _float("9007199254740993", "9007199254740993")]
TEXT_EXTREMES = [same("empty", "''"), same("1MB", f"repeat('x', {MB})"), same("trailing", "'a   '"),
                 same("leading", "'   a'"), same("unicode", "'é€😀ß'"),
                 # Spark string literals take backslash escapes and no doubled quotes
                 Value("like-meta", r"'%_\'", r"'%_\'", "concat('%_', chr(92))"),
                 Value("quote", "''''", "''''", "chr(39)"),
                 same("num-text", "'-9223372036854775809'"), same("nan-text", "'NaN'"),
                 same("date-text", "'9999-12-31'"), same("not-in-values", "'zzz'"), same("upper-A", "'A'")]
# days/microseconds since 1970 for Spark (DATE holds ±5.8 million years, TIMESTAMP ±290,000)
DATE_EXTREMES = [_date("0001-01-01", "0001-01-01", "0001-01-01", -719162),
                 _date("9999-12-31", "9999-12-31", "9999-12-31", 2932896),
                 _date("far-future", "5000000-01-01", "5000000-01-01", 1825000000),
                 _date("beyond-ts", "300000-01-01", "300000-01-01", 108900000),
                 _date("BC", "0044-03-15 (BC)", "0044-03-15 BC", -735960),
                 _date("far-BC", "5000000-01-01 (BC)", "4713-01-01 BC", -1825000000),
                 _date("infinity", "infinity", "infinity", None),
                 _date("-infinity", "-infinity", "-infinity", None),
                 _date("leap", "2024-02-29", "2024-02-29", 19782)]
TS_EXTREMES = [_ts("0001-01-01", "0001-01-01 00:00:00", "0001-01-01 00:00:00", -62135596800000000),
               _ts("9999-12-31", "9999-12-31 23:59:59.999999", "9999-12-31 23:59:59.999999", 253402300799999999),
               _ts("far-future", "290000-01-01 00:00:00", "290000-01-01 00:00:00", 9_000_000_000_000_000_000),
               _ts("BC", "0044-03-15 (BC) 12:00:00", "0044-03-15 12:00:00 BC", -63517000000000000),
               _ts("far-BC", "290000-01-01 (BC) 00:00:00", "4713-01-01 00:00:00 BC", -9_000_000_000_000_000_000),
               _ts("infinity", "infinity", "infinity", None),
               _ts("-infinity", "-infinity", "-infinity", None)]
BOOL_EXTREMES = [same("true", "TRUE"), same("false", "FALSE")]

ADVERSARIAL: list[tuple[str, list[Value]]] = [
    ("i", INT_EXTREMES), ("n", INT_EXTREMES), ("f", FLOAT_EXTREMES), ("g", FLOAT_EXTREMES),
    ("t", TEXT_EXTREMES), ("s", TEXT_EXTREMES), ("b", BOOL_EXTREMES), ("d", DATE_EXTREMES),
    ("ts", TS_EXTREMES),
    ("j", INT_EXTREMES[:2]), ("v", FLOAT_EXTREMES[:8]), ("w", TEXT_EXTREMES[:3]), ("e", DATE_EXTREMES[:7]),
]
NULL_PID = 1000  # every column NULL (except pid)


def _ordinary_adv(pid: int, k: int) -> dict[str, str]:
    day = 1 + (pid * 7 + k) % 28
    return {"pid": str(pid), "i": str((pid * 13 + k) % 201 - 100), "n": str((pid + k) % 4),
            "f": repr(((pid * 37 + k * 11) % 2000) - 1000 + 0.25), "g": repr(pid * 1.5 - 20),
            "t": text("abc"[(pid + k) % 3]), "s": text(f"s{pid % 5}"), "b": "TRUE" if (pid + k) % 2 else "FALSE",
            "d": f"CAST('{1990 + pid % 30}-{1 + pid % 12:02d}-{day:02d}' AS DATE)",
            "ts": f"CAST('{2000 + pid % 20}-{1 + k % 12:02d}-{day:02d} {pid % 24:02d}:{k % 60:02d}:30' AS TIMESTAMP)"}


def _ordinary_per(pid: int) -> dict[str, str]:
    return {"pid": str(pid), "j": str(pid % 11), "v": repr(pid * 3.5 % 100), "w": text(f"w{pid % 4}"),
            "e": f"CAST('{2000 + pid % 25}-06-15' AS DATE)"}


@dataclass(frozen=True)
class Person:
    pid: int
    label: str  # e.g. "f=NaN"; "" for ordinary people
    adv: list[dict[str, Value | str]]
    per: dict[str, Value | str]

    @property
    def adversarial(self) -> bool:
        return bool(self.label)


def people(backend: str) -> list[Person]:
    """Everyone in D on ``backend``: ordinary people, then adversarial ones (those it can store)."""
    out = [Person(pid, "", [_ordinary_adv(pid, k) for k in range(1 + pid % 3)], _ordinary_per(pid))
           for pid in range(1, 25)]
    null_adv: dict[str, Value | str] = {c: "NULL" for c in ADV_COLUMNS}
    null_per: dict[str, Value | str] = {c: "NULL" for c in PER_COLUMNS}
    null_adv["pid"] = null_per["pid"] = str(NULL_PID)
    out.append(Person(NULL_PID, "all NULL", [null_adv], null_per))
    pid = NULL_PID
    for column, values in ADVERSARIAL:
        for value in values:
            pid += 1
            if value.sql(backend) is None:
                continue
            adv: dict[str, Value | str] = dict(_ordinary_adv(pid, 0))
            per: dict[str, Value | str] = dict(_ordinary_per(pid))
            (adv if column in ADV_COLUMNS else per)[column] = value
            out.append(Person(pid, f"{column}={value.label}", [adv], per))
    return out


def adversarial_pids(backend: str) -> list[int]:
    return [p.pid for p in people(backend) if p.adversarial]


def person_label(backend: str, pid: int) -> str:
    return next((p.label or "ordinary" for p in people(backend) if p.pid == pid), "?")


def _cell(v: Value | str, ctype: str, backend: str) -> str:
    sql = v.sql(backend) if isinstance(v, Value) else v
    return cast(sql, SQL_TYPES[backend][ctype])  # type: ignore[arg-type]


def _values_rows(rows: Iterable[dict[str, Value | str]], columns: dict[str, dict[str, Any]], backend: str) -> list[str]:
    return ["(" + ", ".join(_cell(r[c], m["type"], backend) for c, m in columns.items()) + ")" for r in rows]


PUB_ROWS = [("a", "A", 1), ("a", "B", 2), ("b", "A", 3), ("c", "C", 4), ("zzz", "Z", 5), ("", "E", 6),
            ("a   ", "T", 7)]


def _pub_rows(backend: str) -> list[str]:
    return [f"({_cell(text(k), 'text', backend)}, {_cell(text(g), 'text', backend)}, {m})" for k, g, m in PUB_ROWS]


def _columns_ddl(columns: dict[str, dict[str, Any]], backend: str) -> str:
    return ", ".join(f"{c} {SQL_TYPES[backend][m['type']]}" for c, m in columns.items())


def config_dict(store: Path, backend: dict[str, Any], sources: dict[str, str], schema: str | None = None
                ) -> dict[str, Any]:
    def table(name: str, columns: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
        t = {"source": sources[name], "columns": {c: dict(m) for c, m in columns.items()}, **extra}
        if schema:
            t["schema"] = schema
        return t

    return {
        "backend": backend,
        "budget_store": {"kind": "sqlite", "path": str(store / f"budget-{uuid.uuid4().hex[:8]}.sqlite")},
        "cache": {"enabled": False},
        "defaults": {"epsilon": 1.0, "delta": 1e-6},
        "tables": {
            "adv": table("adv", ADV_COLUMNS, privacy_unit="pid", max_groups=2, max_rows=2),
            "per": table("per", PER_COLUMNS, privacy_unit="pid", one_row_per_unit=True),
            "pub": table("pub", PUB_COLUMNS, public=True),
        },
        "analysts": {ANALYST: {"epsilon": 1.0e12, "delta": 0.9}},
    }


def make_engine(raw: dict[str, Any], tmp: Path) -> Engine:
    return Engine(parse_config(yaml.safe_dump(raw, allow_unicode=True), source="generative", base_dir=tmp))


# ----------------------------------------------------------------------------------------- worlds
class World:
    """One backend loaded with D; ``engine(excluded)`` answers on D minus the people ``excluded``."""

    kind: str

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        # budget stores in memory-backed /dev/shm where there is one: every reservation waits for the disk
        shm = Path("/dev/shm")
        self._store_dir = tempfile.TemporaryDirectory(prefix="privsql-gen-", dir=shm if shm.is_dir() else tmp)
        self.store = Path(self._store_dir.name)
        self.people = people(self.kind)
        self.all_pids = frozenset(p.pid for p in self.people)
        self.adversarial = [p.pid for p in self.people if p.adversarial]

    def _inserts(self) -> dict[str, list[str]]:
        return {"adv": _values_rows((r for p in self.people for r in p.adv), ADV_COLUMNS, self.kind),
                "per": _values_rows((p.per for p in self.people), PER_COLUMNS, self.kind),
                "pub": _pub_rows(self.kind)}

    def engine(self, excluded: frozenset[int] = frozenset()) -> Engine:
        raise NotImplementedError

    def only(self, keep: Iterable[int]) -> frozenset[int]:
        """The exclusion set that keeps exactly ``keep`` (and nobody else)."""
        return self.all_pids - frozenset(keep)

    def ordinary_plus(self, pids: Iterable[int] = ()) -> frozenset[int]:
        return self.only([p.pid for p in self.people if not p.adversarial] + list(pids))

    def close(self) -> None:
        self._store_dir.cleanup()


class _InPlaceWorld(World):
    """One engine; variants are made by rewriting ``adv``/``per`` from pristine copies."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self._current: frozenset[int] = frozenset()
        self._engine = self._open()

    def _open(self) -> Engine:
        raise NotImplementedError

    def _execute(self, statements: list[str]) -> None:
        raise NotImplementedError

    def engine(self, excluded: frozenset[int] = frozenset()) -> Engine:
        if excluded != self._current:
            keep = ", ".join(str(p) for p in sorted(self.all_pids - excluded)) or "NULL"
            stmts = []
            for name in ("adv", "per"):
                stmts += [f"DELETE FROM {self._ref(name)}",
                          f"INSERT INTO {self._ref(name)} SELECT * FROM {self._ref(name + '_all')} "
                          f"WHERE pid IN ({keep})"]
            self._execute(stmts)
            self._current = excluded
        return self._engine

    def _ref(self, name: str) -> str:
        return name

    def _create_statements(self) -> list[str]:
        inserts = self._inserts()
        stmts = []
        for name, columns in (("adv", ADV_COLUMNS), ("per", PER_COLUMNS), ("pub", PUB_COLUMNS)):
            pk = ", PRIMARY KEY (pid)" if name == "per" else ""
            for suffix in ("", "_all") if name != "pub" else ("",):
                ref = self._ref(name + suffix)
                stmts.append(f"CREATE TABLE {ref} ({_columns_ddl(columns, self.kind)}{pk})")
                stmts.append(f"INSERT INTO {ref} VALUES " + ", ".join(inserts[name]))
        return stmts

    def close(self) -> None:
        try:
            self._engine.close()
        finally:
            super().close()


class DuckDBWorld(_InPlaceWorld):
    kind = "duckdb"

    def _open(self) -> Engine:
        import duckdb

        path = self.tmp / f"adv-{uuid.uuid4().hex[:8]}.duckdb"
        con = duckdb.connect(str(path))
        for stmt in self._create_statements():
            con.execute(stmt)
        con.close()
        raw = config_dict(self.store, {"kind": "duckdb", "path": str(path)}, {t: t for t in ("adv", "per", "pub")})
        return make_engine(raw, self.tmp)

    def _execute(self, statements: list[str]) -> None:
        con = self._engine.backend._con  # type: ignore[attr-defined]  # the test rewrites its own data
        con.execute("BEGIN")
        for stmt in statements:
            con.execute(stmt)
        con.execute("COMMIT")


class PostgresWorld(_InPlaceWorld):
    kind = "postgres"

    def __init__(self, tmp: Path, dsn: str = PG_DSN) -> None:
        self.dsn = dsn
        self.schema = f"privsql_gen_{uuid.uuid4().hex[:10]}"
        super().__init__(tmp)

    def _ref(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def _open(self) -> Engine:
        self._execute([f"CREATE SCHEMA {self.schema}", *self._create_statements()])
        raw = config_dict(self.store, {"kind": "postgres", "dsn": self.dsn, "schema": self.schema,
                                     "pool_min_size": 1, "pool_max_size": 2},
                          {t: t for t in ("adv", "per", "pub")}, schema=self.schema)
        return make_engine(raw, self.tmp)

    def _execute(self, statements: list[str]) -> None:
        import psycopg

        with psycopg.connect(self.dsn) as con:
            with con.transaction():
                for stmt in statements:
                    con.execute(stmt)  # type: ignore[arg-type]

    def raw_connection(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn)

    def close(self) -> None:
        try:
            super().close()
        finally:
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as con:
                con.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")  # type: ignore[arg-type]


class SparkWorld(World):
    """Spark snapshots (caches) each source at start-up: one engine per variant, over its own view."""

    kind = "spark"

    def __init__(self, tmp: Path, max_engines: int = 8) -> None:
        super().__init__(tmp)
        self.max_engines = max_engines
        self._engines: dict[frozenset[int], Engine] = {}
        self._order: list[frozenset[int]] = []
        self._prefix = f"gen{uuid.uuid4().hex[:8]}_"
        self._views = 0
        self._session: Any = None
        self._base = self.engine(frozenset())  # starts the session, holds it open

    def _spark(self) -> Any:
        from pyspark.sql import SparkSession

        if self._session is None:
            builder = SparkSession.builder.master("local[2]").appName("privsql-generative")
            for k, v in {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                         "spark.sql.session.timeZone": "UTC", "spark.sql.shuffle.partitions": "2"}.items():
                builder = builder.config(k, v)
            self._session = builder.getOrCreate()
            self._session.sparkContext.setLogLevel("ERROR")
            self._session.conf.set("spark.sql.ansi.enabled", "false")
            inserts = self._inserts()
            for name, columns in (("adv", ADV_COLUMNS), ("per", PER_COLUMNS), ("pub", PUB_COLUMNS)):
                cols = ", ".join(columns)
                df = self._session.sql(f"SELECT * FROM VALUES {', '.join(inserts[name])} AS t({cols})")
                df.cache().createOrReplaceTempView(self._prefix + name + "_all")
        return self._session

    def engine(self, excluded: frozenset[int] = frozenset()) -> Engine:
        found = self._engines.get(excluded)
        if found is not None:
            return found
        spark = self._spark()
        self._views += 1
        keep = ", ".join(str(p) for p in sorted(self.all_pids - excluded)) or "NULL"
        sources = {"pub": self._prefix + "pub_all"}
        for name in ("adv", "per"):
            view = f"{self._prefix}{name}_v{self._views}"
            spark.sql(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {self._prefix}{name}_all "
                      f"WHERE pid IN ({keep})")
            sources[name] = view
        engine = make_engine(config_dict(self.store, {"kind": "spark", "master": "local[2]",
                                                     "conf": {"spark.sql.shuffle.partitions": "2"}}, sources),
                             self.tmp)
        self._engines[excluded] = engine
        self._order.append(excluded)
        while len(self._order) > self.max_engines:  # keep the base engine (it holds the session)
            victim = next(k for k in self._order if k != frozenset())
            self._order.remove(victim)
            self._engines.pop(victim).close()
        return engine

    def close(self) -> None:
        for key in [k for k in self._order if k != frozenset()] + [frozenset()]:
            engine = self._engines.pop(key, None)
            if engine is not None:
                engine.close()
        super().close()


WORLDS = {"duckdb": DuckDBWorld, "postgres": PostgresWorld, "spark": SparkWorld}


@contextmanager
def world(kind: str, tmp: Path) -> Iterator[World]:
    w = WORLDS[kind](tmp)
    try:
        yield w
    finally:
        w.close()
