"""Golden files for the rewrite: input SQL → expected backend SQL (DuckDB), one file per case.

Each file in tests/fixtures/rewrite/ holds ``-- title:``, optionally ``-- execute: true``,
then ``-- input`` and ``-- expected`` sections. Regenerate the expected parts after an
intended change with ``PRIVSQL_UPDATE_GOLDEN=1 python -m pytest tests/test_rewrite_golden.py``
and review the diff. ``execute: true`` cases also run the rewritten query with the noise
switched off and compare the answer with the exact answer of the original query.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pytest
import sqlglot

import privsql.engine as engine_module
from conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "rewrite"
CASES = sorted(FIXTURES.glob("*.sql"))


def _sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    current = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- title:"):
            out["title"] = line.split(":", 1)[1].strip()
        elif line.startswith("-- execute:"):
            out["execute"] = line.split(":", 1)[1].strip()
        elif line.strip() in ("-- input", "-- expected"):
            if current:
                out[current] = "\n".join(lines).strip()
            current, lines = line.strip()[3:], []
        else:
            lines.append(line)
    if current:
        out[current] = "\n".join(lines).strip()
    return out


def _pretty(sql: str) -> str:
    return sqlglot.parse_one(sql, read="duckdb").sql(dialect="duckdb", pretty=True)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_rewrite_matches_golden(path: Path, shared_engine) -> None:
    case = _sections(path.read_text())
    prepared = shared_engine.prepare(case["input"])
    actual = _pretty(shared_engine.backend_sql(prepared, salt=0))
    if os.environ.get("PRIVSQL_UPDATE_GOLDEN"):
        header = [f"-- title: {case['title']}"] + ([f"-- execute: {case['execute']}"] if "execute" in case else [])
        path.write_text("\n".join(header + ["-- input", case["input"], "-- expected", actual]) + "\n")
        return
    assert "expected" in case, f"{path.name} has no expected section: run with PRIVSQL_UPDATE_GOLDEN=1"
    assert actual == case["expected"]


def _exact_answer(sql: str) -> list[tuple]:
    """The original query on the raw sample data, typed as the config declares."""
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE people AS SELECT CAST(pid AS BIGINT) pid, CAST(age AS BIGINT) age,
        CAST(sex AS VARCHAR) sex, CAST(educ AS BIGINT) educ, CAST(race AS BIGINT) race,
        CAST(income AS DOUBLE) income, CAST(married AS BIGINT) married
        FROM read_csv('{ROOT / "sample_data" / "people.csv"}', all_varchar = true)""")
    return con.execute(sqlglot.transpile(sql, read="postgres", write="duckdb")[0]).fetchall()


EXECUTED = [p for p in CASES if _sections(p.read_text()).get("execute") == "true"]


@pytest.mark.parametrize("path", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_rewrite_without_noise_gives_exact_answer(path: Path, shared_engine, monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "add_laplace_noise", lambda values, scale: np.asarray(values))
    sql = _sections(path.read_text())["input"]
    got = shared_engine.execute(sql, analyst="alice", epsilon=1.0).rows
    want = _exact_answer(sql)
    key = lambda r: tuple(str(v) for v in r)  # noqa: E731
    assert len(got) == len(want)
    for g, w in zip(sorted(got, key=key), sorted(want, key=key)):
        for a, b in zip(g, w):
            if isinstance(b, (int, float)):
                assert a == pytest.approx(b, rel=1e-6, abs=1e-3)
            else:
                assert a == b
