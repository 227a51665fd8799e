"""`privsql passwd`, settings parsing and utility-statement parsing."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from privsql.errors import ConfigError
from privsql.server.auth import parse_verifier
from privsql.server.commands import passwd, set_password
from privsql.server.settings import SETTINGS_HELP, ServerSettings, load_settings
from privsql.server.utility import Deallocate, SetVar, ShowVar, Transaction, parse_utility

FLOW = "analysts:\n  alice: {epsilon: 10.0, delta: 1.0e-6}   # note\n  bob: {epsilon: 5.0}\n"
BLOCK = "analysts:\n  alice:\n    epsilon: 10.0\n    password: old\n  bob:\n    epsilon: 5.0\nother: 1\n"


@pytest.mark.parametrize("text", [FLOW, BLOCK])
def test_set_password_edits_only_that_analyst(text: str) -> None:
    new = yaml.safe_load(set_password(text, "alice", "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5"))
    assert new["analysts"]["alice"]["password"].startswith("SCRAM-SHA-256$")
    assert new["analysts"]["alice"]["epsilon"] == 10.0
    assert "password" not in new["analysts"]["bob"]


def test_passwd_command_writes_a_verifier(tmp_path) -> None:
    path = tmp_path / "privsql.yaml"
    path.write_text(FLOW)
    result = CliRunner().invoke(passwd, ["bob", "--config", str(path)], input="pw\npw\n")
    assert result.exit_code == 0, result.output
    verifier = yaml.safe_load(path.read_text())["analysts"]["bob"]["password"]
    assert parse_verifier(verifier).iterations == 4096
    assert "# note" in path.read_text()


def test_settings_defaults_overrides_and_errors() -> None:
    assert load_settings(None) == ServerSettings()
    assert load_settings({"port": "6000"}, port=None).port == 6000
    assert load_settings({"port": 6000}, port=7000).port == 7000
    for bad in ({"auth": "md5"}, {"nope": 1}, {"tls_cert": "x"}, {"query_timeout": 0}):
        with pytest.raises(ConfigError):
            load_settings(bad)
    assert set(SETTINGS_HELP) == set(ServerSettings.__dataclass_fields__)


@pytest.mark.parametrize("sql,expected", [
    ("SET privsql.epsilon = 0.5", SetVar("privsql.epsilon", "0.5")),
    ("set time zone 'UTC'", SetVar("timezone", "UTC")),
    ("SET SESSION search_path TO public, x", SetVar("search_path", "public, x")),
    ("SET extra_float_digits TO DEFAULT", SetVar("extra_float_digits", None)),
    ("show transaction isolation level", ShowVar("transaction_isolation")),
    ("BEGIN READ ONLY", Transaction("begin")),
    ("ROLLBACK TO SAVEPOINT s1", Transaction("rollback_to", "s1")),
    ('DEALLOCATE "_PLAN0x1"', Deallocate("_PLAN0x1")),
    ("SELECT 1", None),
    ("settle_up()", None),
])
def test_parse_utility(sql: str, expected: object) -> None:
    assert parse_utility(sql) == expected
