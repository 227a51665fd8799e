"""The command line, run in-process with click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import DEFAULT_CONFIG, ROOT
from privsql.cli import main


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["budget_store"]["path"] = str(tmp_path / "budget.sqlite")
    for table in raw["tables"].values():
        table["source"] = str(ROOT / table["source"])
    raw["analysts"]["alice"]["epsilon"] = 3.0
    path = tmp_path / "privsql.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_query_prints_two_rows_and_the_budget(config_path: str) -> None:
    res = run("query", "SELECT sex, COUNT(*) AS n, AVG(income) AS avg_income FROM people GROUP BY sex",
              "--config", config_path)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split("|")[0].strip() == "sex"
    assert "(2 rows)" in res.output
    assert "95% CI" in res.output
    assert "remaining ε=2" in res.output


def test_repeated_queries_end_in_a_budget_refusal(config_path: str) -> None:
    for age in range(3):
        assert run("query", f"SELECT COUNT(*) FROM people WHERE age > {age}", "-c", config_path).exit_code == 0
    res = run("query", "SELECT COUNT(*) FROM people", "-c", config_path)
    assert res.exit_code == 1
    assert "privacy budget exhausted for analyst 'alice'" in res.output
    assert "Traceback" not in res.output


def test_refusal_is_one_line_with_sqlstate(config_path: str) -> None:
    res = run("query", "SELECT * FROM people", "-c", config_path)
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0
    assert "[42501]" in res.output and "aggregate queries only" in res.output


def test_json_and_csv_formats(config_path: str) -> None:
    res = run("query", "SELECT sex, COUNT(*) AS n FROM people GROUP BY sex", "-c", config_path, "--format", "json")
    doc = json.loads(res.stdout)
    assert [c["name"] for c in doc["columns"]] == ["sex", "n"]
    assert len(doc["rows"]) == 2 and doc["privacy"]["epsilon"] == 1.0
    res = run("query", "SELECT sex, COUNT(*) AS n FROM people GROUP BY sex", "-c", config_path, "--format", "csv")
    assert res.stdout.splitlines()[0] == "sex,n" and len(res.stdout.splitlines()) == 3


def test_explain_spends_nothing(config_path: str) -> None:
    res = run("explain", "SELECT dept, AVG(cost) FROM visits GROUP BY dept", "-c", config_path)
    assert res.exit_code == 0, res.output
    assert "95% error" in res.output and "ε = 1" in res.output and "__m0" not in res.output
    res = run("explain", "SELECT dept, AVG(cost) FROM visits GROUP BY dept", "-c", config_path, "--verbose")
    assert "backend sql" in res.output and "measure __m0" in res.output
    res = run("budget", "-c", config_path, "--analyst", "alice")
    assert "spent 0," in res.output


def test_budget_shows_ledger(config_path: str) -> None:
    run("query", "SELECT COUNT(*) FROM people", "-c", config_path, "-e", "0.25")
    res = run("budget", "-c", config_path)
    assert res.exit_code == 0
    assert "alice: ε total 3, spent 0.25, remaining 2.75" in res.output
    assert "answered SELECT COUNT(*) FROM people" in res.output


def test_bad_config_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tables:\n  people:\n    source: x.csv\n    privacy_unit: pid\n    max_rows: 0\n"
                    "    columns: {pid: {type: int}}\n")
    res = run("query", "SELECT COUNT(*) FROM people", "-c", str(path))
    assert res.exit_code == 1
    assert "bad.yaml:5: tables.people.max_rows: must be a positive integer" in res.output


def test_unknown_analyst(config_path: str) -> None:
    res = run("query", "SELECT COUNT(*) FROM people", "-c", config_path, "--analyst", "mallory")
    assert res.exit_code == 1 and "unknown analyst 'mallory'" in res.output


def test_target_error_picks_epsilon(config_path: str) -> None:
    res = run("explain", "SELECT COUNT(*) FROM people", "-c", config_path, "--target-error", "30")
    assert res.exit_code == 0, res.output
    assert "ε needed for a 95% error of ±30: 0.1" in res.output
    res = run("query", "SELECT COUNT(*) FROM people", "-c", config_path, "--target-error", "30", "--format", "json")
    assert json.loads(res.stdout)["privacy"]["epsilon"] == pytest.approx(0.1, rel=0.02)
