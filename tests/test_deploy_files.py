"""docker-compose.yml and Dockerfile, checked without Docker (it cannot run on this machine):
the compose file parses and names files that exist, its commands are real privsql commands
with real options, its inline privsql config is a valid config for the PostgreSQL backend and
budget store, and — against the real PostgreSQL here — its role set-up, ``load-sample`` and
config answer a query with the least-privilege roles, exactly as the containers would.
"""

from __future__ import annotations

import re
import shlex
import uuid

import psycopg
import pytest
import yaml
from conftest import ROOT, require_postgres

from privsql.config import load_config, parse_config

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def unescape(text: str) -> str:
    """Compose interpolates $VAR in values; a literal $ is written $$."""
    return text.replace("$$", "$")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_compose_parses_and_describes_the_deployment() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"postgres", "load-sample", "privsql"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert "5433:5433" in services["privsql"]["ports"]
    assert services["privsql"]["depends_on"]["load-sample"]["condition"] == "service_completed_successfully"
    assert services["load-sample"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("load-sample", "privsql"):
        build = services[name]["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
        assert (context / dockerfile).is_file()
    for name, service in services.items():
        for ref in service.get("configs", []):
            assert ref["source"] in doc["configs"], f"{name} mounts an undefined config"


def test_no_unescaped_dollar_in_compose() -> None:
    """A stray $ would be interpolated by compose (SCRAM verifiers contain $)."""
    text = COMPOSE.read_text().replace("$$", "")
    assert "$" not in text


def test_dockerfile_copies_existing_files_and_installs_like_ci() -> None:
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    for word, rest in steps:
        if word == "COPY":
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    runs = " && ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install ." in runs  # the dependencies come from pyproject.toml, as in scripts/setup.sh
    assert re.search(r"pip install .*-e", (ROOT / "scripts" / "setup.sh").read_text())  # CI: the same project
    cmd = next(rest for word, rest in reversed(steps) if word == "CMD")
    assert yaml.safe_load(cmd)[:2] == ["privsql", "serve"]
    assert ("USER", "privsql") in steps


@pytest.mark.parametrize("service", ["load-sample", "privsql"])
def test_compose_commands_are_real_privsql_commands(service: str) -> None:
    import click

    from privsql.cli import main

    argv = compose()["services"][service]["command"]
    assert argv[0] == "privsql"
    ctx = click.Context(main)
    command = main.get_command(ctx, argv[1])
    assert command is not None, f"`privsql {argv[1]}` is not registered on the CLI"
    command.make_context(argv[1], list(argv[2:]))  # parses the options; raises on an unknown one
    for i, arg in enumerate(argv):
        if arg == "--config" and argv[i + 1].startswith("/app/"):
            assert (ROOT / argv[i + 1].removeprefix("/app/")).is_file()


def test_inline_config_is_a_valid_postgres_config() -> None:
    from privsql.server.auth import parse_verifier

    doc = compose()
    config = parse_config(unescape(doc["configs"]["privsql_config"]["content"]), source="docker-compose.yml")
    assert config.backend["kind"] == "postgres" and "@postgres:5432/" in config.backend["dsn"]
    assert config.budget_store["kind"] == "postgres"
    assert config.raw["server"]["port"] == 5433
    example = load_config(ROOT / "config" / "privsql-postgres.yaml")
    assert config.tables == example.tables  # the same tables as the documented example
    for analyst in config.analysts.values():
        parse_verifier(analyst.password)


@pytest.mark.postgres
def test_compose_stack_against_real_postgres(tmp_path) -> None:
    """The init SQL, load-sample and the inline config, with the least-privilege roles, on PostgreSQL 15."""
    from privsql.backends.loader import load_postgres
    from privsql.engine import Engine

    dsn = require_postgres()
    suffix = uuid.uuid4().hex[:8]
    db = f"privsql_deploy_{suffix}"
    roles = {"privsql_reader": f"privsql_reader_{suffix}", "privsql_budget": f"privsql_budget_{suffix}"}

    def local(text: str) -> str:
        for old, new in roles.items():
            text = text.replace(old, new)
        return text.replace("DATABASE privsql", f"DATABASE {db}").replace("@postgres:5432/privsql",
                                                                             f"@127.0.0.1:5432/{db}")

    doc = compose()
    server = dsn.rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {db}")
        try:
            with psycopg.connect(f"{server}/{db}", autocommit=True) as con:
                con.execute(local(unescape(doc["configs"]["postgres_roles"]["content"])))
            load_postgres(f"{server}/{db}", "privsql_sample", load_config(ROOT / "config" / "privsql.yaml"))
            config = parse_config(local(unescape(doc["configs"]["privsql_config"]["content"])), source="compose")
            engine = Engine(config)
            try:
                rows = engine.execute("SELECT dept, COUNT(*) FROM visits GROUP BY dept", analyst="alice",
                                      epsilon=0.5).rows
                assert len(rows) == 6
                assert engine.budget("alice").epsilon_spent == pytest.approx(0.5)
            finally:
                engine.close()
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            for role in roles.values():
                admin.execute(f"DROP ROLE IF EXISTS {role}")
