"""``privsql load-sample``: put the sample tables into a PostgreSQL database."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from privsql.errors import PrivsqlError


def default_sample_config() -> Path:
    """The project's config/privsql.yaml: next to the source tree (editable install), else in the
    current folder (e.g. /app in the Docker image)."""
    beside = Path(__file__).resolve().parents[2] / "config" / "privsql.yaml"
    return beside if beside.exists() else Path("config") / "privsql.yaml"


@click.command("load-sample")
@click.option("--dsn", required=True, envvar="PRIVSQL_LOAD_DSN",
              help="PostgreSQL connection string, e.g. postgresql://postgres@127.0.0.1:5432/test")
@click.option("--schema", default="privsql_sample", show_default=True, help="schema to create the tables in")
@click.option("--config", "-c", "config_path", default=None,
              help="config whose CSV-backed tables are loaded (default: the project's config/privsql.yaml)")
def load_sample(dsn: str, schema: str, config_path: str | None) -> None:
    """Load the sample tables (people, visits, depts) into PostgreSQL with COPY.

    people gets a PRIMARY KEY on pid (it declares one_row_per_unit). Tables of
    the same names in the schema are replaced, in one transaction.
    """
    import psycopg

    from privsql.backends.loader import load_postgres
    from privsql.config import load_config

    try:
        config = load_config(config_path or default_sample_config())
        loaded = load_postgres(dsn, schema, config)
    except PrivsqlError as exc:
        click.echo(f"privsql: error [{exc.sqlstate}]: {exc.message}", err=True)
        sys.exit(1)
    except psycopg.Error as exc:
        click.echo(f"privsql: PostgreSQL error: {str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__}",
                   err=True)
        sys.exit(1)
    for t in loaded:
        click.echo(f"loaded {t.name}: {t.rows:,} rows")
