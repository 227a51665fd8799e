"""Config validation: every error names the key and its line."""

from __future__ import annotations

import pytest

from privsql.config import parse_config
from privsql.errors import ConfigError

BASE = """\
tables:
  people:
    source: people.csv
    privacy_unit: pid
    columns:
      pid: {type: int}
      age: {type: int, lower: 0, upper: 100}
analysts:
  alice: {epsilon: 1.0}
"""


def test_minimal_config_has_defaults() -> None:
    cfg = parse_config(BASE)
    assert cfg.backend == {"kind": "duckdb", "path": ":memory:"}
    assert cfg.budget_store["kind"] == "sqlite"
    assert cfg.defaults.epsilon == 1.0 and cfg.defaults.delta == 0.0
    people = cfg.tables["people"]
    assert people.max_groups == 1 and people.max_rows == 1 and people.privacy_unit == "pid"
    assert people.columns["age"].lower == 0 and people.columns["age"].upper == 100


@pytest.mark.parametrize("old,new,expected", [
    ("age: {type: int, lower: 0, upper: 100}", "age: {type: int, lower: 100, upper: 0}",
     ":7: tables.people.columns.age: lower (100) must not exceed upper (0)"),
    ("age: {type: int, lower: 0, upper: 100}", "age: {type: integer}",
     ":7: tables.people.columns.age.type: must be one of"),
    ("age: {type: int, lower: 0, upper: 100}", "age: {type: int, lower: 0}",
     ":7: tables.people.columns.age: give both lower and upper"),
    ("    privacy_unit: pid\n", "",
     "tables.people.privacy_unit: every table needs a privacy_unit"),
    ("alice: {epsilon: 1.0}", "alice: {epsilon: -1}", ":9: analysts.alice.epsilon: must be greater than 0"),
    ("alice: {epsilon: 1.0}", "alice: {epsilon: 1.0, delta: 2}", ":9: analysts.alice.delta: must be in [0, 1)"),
    ("alice: {epsilon: 1.0}", "alice: {epsilon: 1.0, budget: 3}", ":9: analysts.alice.budget: unknown key"),
    ("tables:", "tabels:\n  x: 1\ntables:", ":1: tabels: unknown section"),
    ("    source: people.csv\n", "    source: people.csv\n    max_groups: 1.5\n",
     ":4: tables.people.max_groups: must be a positive integer"),
])
def test_errors_name_key_and_line(old: str, new: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace(old, new), source="cfg.yaml")
    assert expected in info.value.message
    assert info.value.message.startswith("cfg.yaml")


def test_invalid_yaml_reports_line() -> None:
    with pytest.raises(ConfigError, match=r"cfg.yaml:4: invalid YAML: expected ',' or ']'"):
        parse_config("tables:\n  people:\n    source: [unclosed\n  x: 1\n", source="cfg.yaml")


def test_values_are_typed() -> None:
    cfg = parse_config(BASE.replace("{type: int, lower: 0, upper: 100}", "{type: int, values: [1, 2]}")
                       + "defaults: {epsilon: 0.5}\n")
    assert cfg.tables["people"].columns["age"].values == (1, 2)
    with pytest.raises(ConfigError, match="not a valid int"):
        parse_config(BASE.replace("{type: int, lower: 0, upper: 100}", "{type: int, values: [a]}"))


def test_public_table_needs_no_privacy_unit() -> None:
    cfg = parse_config(BASE.replace(
        "analysts:", "  depts:\n    source: d.csv\n    public: true\n    columns: {dept: text}\nanalysts:"))
    assert not cfg.tables["depts"].is_private


def test_not_null_is_enforced_when_loaded(tmp_path) -> None:
    from privsql.engine import Engine

    csv = tmp_path / "t.csv"
    csv.write_text("pid,x\n1,2.0\n2,\n")
    text = (f"tables:\n  t:\n    source: {csv}\n    privacy_unit: pid\n    columns:\n      pid: {{type: int}}\n"
            f"      x: {{type: float, lower: 0, upper: 5, not_null: true}}\n"
            f"budget_store: {{kind: sqlite, path: {tmp_path / 'b.sqlite'}}}\nanalysts:\n  a: {{epsilon: 1}}\n")
    with pytest.raises(ConfigError, match="constraint"):
        Engine(parse_config(text))
