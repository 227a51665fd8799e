"""The ``privsql`` command line: query, explain, budget (and serve / passwd from the wire server).

Every command runs the whole pipeline in-process. User errors print one line on
stderr with the SQLSTATE and exit with status 1; no traceback.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from privsql.display import readable, rounded_ci, with_ci
from privsql.errors import PrivsqlError
from privsql.results import QueryResult

CONFIG_HELP = "config file (default: $PRIVSQL_CONFIG or config/privsql.yaml)"


def _fail(message: str) -> None:
    click.echo(f"privsql: {message}", err=True)
    sys.exit(1)


@contextmanager
def _engine(config: str | None) -> Iterator[Any]:
    from privsql.engine import Engine

    try:
        engine = Engine.from_config(config)
    except PrivsqlError as exc:
        _fail(f"error [{exc.sqlstate}]: {exc.message}")
    try:
        yield engine
    except PrivsqlError as exc:
        _fail(f"error [{exc.sqlstate}]: {exc.message}")
    except Exception as exc:  # an internal error: one line, the traceback only on request
        if os.environ.get("PRIVSQL_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set PRIVSQL_DEBUG=1 for a traceback)")
    finally:
        engine.close()


def _analyst(engine: Any, analyst: str | None) -> str:
    name = analyst or os.environ.get("PRIVSQL_ANALYST") or engine.config.defaults.analyst
    if not name:
        _fail("no analyst given: use --analyst NAME, set PRIVSQL_ANALYST, or set defaults.analyst in the config")
    return str(name)


def _cell(value: Any, ci: float | None = None) -> str:
    """One table cell: a noisy number with its own 95% CI, rounded to what the CI supports."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return with_ci(value, ci)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _row_cis(result: QueryResult) -> list[tuple[float | None, ...]]:
    """Per row, each cell's 95% CI half-width (None where there is none)."""
    if result.cell_ci is not None and len(result.cell_ci) == len(result.rows):
        return list(result.cell_ci)
    return [(None,) * len(result.columns)] * len(result.rows)


def render_table(result: QueryResult) -> str:
    headers = [c.name for c in result.columns]
    body = [[_cell(v, ci) for v, ci in zip(row, cis)] for row, cis in zip(result.rows, _row_cis(result))]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    numeric = [c.type in ("bigint", "double", "numeric") for c in result.columns]

    def line(cells: list[str]) -> str:
        return " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(headers), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    out.append(f"({len(body)} row{'s' if len(body) != 1 else ''})")
    return "\n".join(out)


def render_privacy(result: QueryResult) -> str:
    p = result.privacy
    if p is None:
        return ""
    lines = []
    for col in p.columns:
        if col.mechanism in ("laplace", "gaussian") and col.approximate:
            lines.append(f"  {col.column}: {col.mechanism} noise, 95% CI ≈±{rounded_ci(col.ci95 or 0.0)} "
                         "(median over groups; each cell shows its own)")
        elif col.mechanism in ("laplace", "gaussian"):
            lines.append(f"  {col.column}: {col.mechanism} noise, 95% CI ±{rounded_ci(col.ci95 or 0.0)}")
        elif col.mechanism == "post-processing":
            lines.append(f"  {col.column}: computed from noisy values (no CI)")
    lines += [f"  note: {note}" for note in p.notes]
    spent = f"ε={p.epsilon:g}" + (f", δ={p.delta:g}" if p.delta else "")
    lines.append(f"spent {spent}{' (free repeat)' if p.cached else ''}; "
                 f"remaining ε={p.epsilon_remaining:.6g}, δ={p.delta_remaining:.3g} for analyst {p.analyst}")
    return "\n".join(lines)


def _with_ci_columns(result: QueryResult) -> tuple[list[str], list[list[Any]]]:
    """CSV header and rows with a ``<column>_ci95`` column after each column that has a CI."""
    noisy = [c.column for c in result.privacy.columns if c.mechanism in ("laplace", "gaussian")] \
        if result.privacy is not None else []
    header: list[str] = []
    for c in result.columns:
        header += [c.name, f"{c.name}_ci95"] if c.name in noisy else [c.name]
    rows = []
    for row, cis in zip(result.rows, _row_cis(result)):
        cells: list[Any] = []
        for c, v, ci in zip(result.columns, row, cis):
            cells += [_jsonable(v), ci] if c.name in noisy else [_jsonable(v)]
        rows.append(cells)
    return header, rows


def render(result: QueryResult, fmt: str, *, ci_columns: bool = False) -> str:
    if fmt == "json":
        doc: dict[str, Any] = {
            "columns": [{"name": c.name, "type": c.type} for c in result.columns],
            "rows": [[_jsonable(v) for v in row] for row in result.rows],
        }
        if result.privacy is not None:
            p = result.privacy
            doc["privacy"] = {
                "analyst": p.analyst, "epsilon": p.epsilon, "delta": p.delta,
                "epsilon_remaining": p.epsilon_remaining, "delta_remaining": p.delta_remaining, "cached": p.cached,
                "columns": [{"column": c.column, "mechanism": c.mechanism, "scale": c.scale, "ci95": c.ci95,
                             "approximate": c.approximate} for c in p.columns],
                "cell_ci95": [list(cis) for cis in _row_cis(result)], "notes": list(p.notes),
            }
        return json.dumps(doc, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if ci_columns:
            header, rows = _with_ci_columns(result)
        else:
            header, rows = [c.name for c in result.columns], [[_jsonable(v) for v in row] for row in result.rows]
        writer.writerow(header)
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    return render_table(result)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="privsql")
def main() -> None:
    """privsql: differentially private answers to aggregate SQL."""


@main.command()
@click.argument("sql")
@click.option("--analyst", "-a", help="whose budget to charge (default: $PRIVSQL_ANALYST or defaults.analyst)")
@click.option("--epsilon", "-e", type=float, help="ε for this query (default: defaults.epsilon)")
@click.option("--delta", type=float, help="δ for this query, spent only when groups need a threshold")
@click.option("--target-error", type=float, help="choose ε so that COUNT/SUM columns have this 95% error")
@click.option("--reference-rows", type=int, help="with --target-error: AVG/VAR columns get it in groups of N rows")
@click.option("--config", "-c", help=CONFIG_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--ci", "ci_columns", is_flag=True, help="csv: add a <column>_ci95 column after each noisy column")
def query(sql: str, analyst: str | None, epsilon: float | None, delta: float | None, target_error: float | None,
          reference_rows: int | None, config: str | None, fmt: str, ci_columns: bool) -> None:
    """Answer SQL with differential privacy and charge the analyst's budget."""
    with _engine(config) as engine:
        who = _analyst(engine, analyst)
        if target_error is not None:
            if epsilon is not None:
                _fail("give either --epsilon or --target-error, not both")
            epsilon = engine.epsilon_for_error(sql, target_error, analyst=who, reference_rows=reference_rows)
        result = engine.execute(sql, analyst=who, epsilon=epsilon, delta=delta)
        click.echo(render(result, fmt, ci_columns=ci_columns))
        if fmt == "table":
            click.echo(render_privacy(result))
        else:
            for notice in result.notices:
                click.echo(notice, err=True)


@main.command()
@click.argument("sql")
@click.option("--epsilon", "-e", type=float, help="ε to plan for (default: defaults.epsilon)")
@click.option("--delta", type=float, help="δ to plan for")
@click.option("--target-error", type=float, help="plan the ε that gives COUNT/SUM columns this 95% error")
@click.option("--reference-rows", type=int, help="with --target-error: AVG/VAR columns get it in groups of N rows")
@click.option("--analyst", "-a", help="plan with this analyst's mechanism (Laplace, or Gaussian for zCDP)")
@click.option("--verbose", "-v", is_flag=True, help="also show each internal noisy measure and the backend SQL")
@click.option("--config", "-c", help=CONFIG_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def explain(sql: str, epsilon: float | None, delta: float | None, target_error: float | None,
            reference_rows: int | None, analyst: str | None, verbose: bool, config: str | None, fmt: str) -> None:
    """Show the DP plan: cost and expected 95% error per column (backend SQL with --verbose). Spends nothing."""
    with _engine(config) as engine:
        if target_error is not None:
            if epsilon is not None:
                _fail("give either --epsilon or --target-error, not both")
            epsilon = engine.epsilon_for_error(sql, target_error, analyst=analyst, reference_rows=reference_rows)
            rows = f" (AVG/VAR in groups of {reference_rows:,} rows)" if reference_rows else ""
            click.echo(f"ε needed for a 95% error of ±{readable(target_error)}{rows}: {epsilon:g}")
        result = engine.explain(sql, epsilon=epsilon, delta=delta, analyst=analyst, verbose=verbose)
        if fmt != "table":
            click.echo(render(result, fmt))
            return
        for item, detail in result.rows:
            click.echo(f"{item}:\n  {detail}")


@main.command()
@click.option("--analyst", "-a", help="one analyst (default: every analyst in the config)")
@click.option("--config", "-c", help=CONFIG_HELP)
@click.option("--ledger", "ledger_rows", type=int, default=10, show_default=True, help="recent ledger rows to show")
def budget(analyst: str | None, config: str | None, ledger_rows: int) -> None:
    """Show each analyst's total, spent and remaining budget and the recent ledger."""
    with _engine(config) as engine:
        names = [analyst] if analyst else list(engine.config.analysts)
        for name in names:
            b = engine.budget(name)
            zcdp = f" (zCDP: ρ spent {b.rho_spent:.4g})" if b.accounting == "zcdp" else ""
            click.echo(f"{b.analyst}: ε total {b.epsilon_total:g}, spent {b.epsilon_spent:.6g}, remaining "
                       f"{b.epsilon_remaining:.6g}; δ total {b.delta_total:g}, spent {b.delta_spent:.3g}, "
                       f"remaining {b.delta_remaining:.3g}; {b.queries} charged queries{zcdp}")
        if ledger_rows > 0:
            entries = engine.ledger(analyst, ledger_rows)
            if entries:
                click.echo("\nrecent ledger:")
            for e in entries:
                text = e.sql_text if len(e.sql_text) <= 70 else e.sql_text[:67] + "..."
                click.echo(f"  {e.time:%Y-%m-%d %H:%M:%S} {e.analyst:<10} ε={e.epsilon:<8g} δ={e.delta:<8.3g} "
                           f"{e.outcome:<8} {text}")


def _register_commands() -> None:
    from privsql.backends.commands import load_sample
    from privsql.server.commands import passwd, serve

    main.add_command(serve)
    main.add_command(passwd)
    main.add_command(load_sample)


_register_commands()

if __name__ == "__main__":
    main()
