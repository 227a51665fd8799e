"""Shared fixtures: engines over the sample data with a private, temporary budget store."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from privsql.config import Config, parse_config
from privsql.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "privsql.yaml"
IN_CI = os.environ.get("CI", "").lower() == "true"


def sample_config(tmp_path: Path, **changes: Any) -> Config:
    """The default config with its budget store in ``tmp_path``; ``changes`` replace top-level sections
    (dicts are merged one level deep, e.g. ``tables={"people": {...}}`` replaces one table)."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["budget_store"] = {"kind": "sqlite", "path": str(tmp_path / "budget.sqlite")}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            merged = copy.deepcopy(raw[key])
            merged.update(value)
            raw[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            raw[key] = value
    return parse_config(yaml.safe_dump(raw), source="test-config", base_dir=ROOT)


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def factory(**changes: Any) -> Engine:
        engine = Engine(sample_config(tmp_path, **changes))
        engines.append(engine)
        return engine

    yield factory
    for e in engines:
        e.close()


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One engine per test module (loading the sample data takes ~0.5 s)."""
    e = Engine(sample_config(tmp_path_factory.mktemp("budget"), cache={"enabled": False},
                             analysts={"alice": {"epsilon": 1.0e6, "delta": 0.5}}))
    yield e
    e.close()


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Path:
    """A CSV file with a header row; None becomes an empty cell."""
    def cell(x: Any) -> str:
        return "" if x is None else str(x)

    path.write_text(",".join(header) + "\n" + "".join(",".join(cell(x) for x in r) + "\n" for r in rows))
    return path


def outcome(engine: Engine, sql: str, **kw: Any) -> str:
    """'answered', or the name of the privsql error the query raised (analyst alice, ε 0.1)."""
    from privsql.errors import PrivsqlError

    try:
        engine.execute(sql, analyst="alice", epsilon=0.1, delta=1e-6, **kw)
    except PrivsqlError as err:
        return type(err).__name__
    return "answered"


def exact_sample(sql: str) -> list[tuple]:
    """``sql`` answered exactly by DuckDB on the raw sample files (views people, visits)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE VIEW people AS SELECT * FROM read_csv('{ROOT / 'sample_data' / 'people.csv'}')")
    con.execute(f"CREATE VIEW visits AS SELECT * FROM read_csv('{ROOT / 'sample_data' / 'visits.csv.gz'}')")
    return con.execute(sql).fetchall()


def require_postgres(dsn: str = "postgresql://postgres@127.0.0.1:5432/test") -> str:
    """Skip when PostgreSQL is unreachable, but fail in CI (CI=true), where it must be there."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {dsn}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {dsn}")
    return dsn
