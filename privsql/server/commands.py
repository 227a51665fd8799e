"""``privsql serve`` and ``privsql passwd``: thin click commands over the wire server.

The lead registers them on the CLI group with ``main.add_command(serve)`` and
``main.add_command(passwd)``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import click

from privsql.server.auth import make_verifier


def _config_path(path: str | None) -> Path:
    from privsql.config import DEFAULT_CONFIG_PATH  # the lead's config module owns the default

    return Path(path or os.environ.get("PRIVSQL_CONFIG") or DEFAULT_CONFIG_PATH)


#: Python's GIL switch interval while serving: short, so the event loop gets the GIL back quickly
#: from worker threads parsing or planning (latency of other sessions under load)
SWITCH_INTERVAL = 0.001


async def _serve(config: Path, host: str | None, port: int | None, overrides: dict[str, Any]) -> None:
    from privsql.engine import Engine
    from privsql.server.settings import load_settings
    from privsql.server.transport import WireServer

    engine = Engine.from_config(str(config))
    settings = load_settings(engine.config.raw.get("server"), host=host, port=port, **overrides)
    server = WireServer(engine, settings)
    await server.start()
    gc.freeze()  # start-up objects (engine, parser tables) never need walking again: shorter GC pauses
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve_forever())
    await stop.wait()
    log = logging.getLogger("privsql.server")
    log.info("shutting down: statements get %g s to finish", settings.shutdown_grace)
    drained = await server.close(settings.shutdown_grace)
    serving.cancel()
    if not drained:
        # a worker thread is stuck in work that could not be interrupted: do not wait for it
        log.warning("shutdown: %d statement(s) did not stop; exiting without them", server.busy)
        logging.shutdown()
        os._exit(0)
    engine.close()
    log.info("stopped")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="privsql YAML config (default: config/privsql.yaml or $PRIVSQL_CONFIG)")
@click.option("--host", default=None, help="listen address (default: server.host or 127.0.0.1)")
@click.option("--port", type=int, default=None, help="listen port (default: server.port or 5433)")
@click.option("--query-timeout", type=float, default=None,
              help="seconds one statement may run (default: server.query_timeout or 60)")
@click.option("--max-statements-per-analyst", type=int, default=None,
              help="statements one analyst may run at once (default: server.max_statements_per_analyst or 4)")
@click.option("--shutdown-grace", type=float, default=None,
              help="seconds SIGTERM lets statements finish before interrupting them (default 5)")
def serve(config_path: str | None, host: str | None, port: int | None, query_timeout: float | None,
          max_statements_per_analyst: int | None, shutdown_grace: float | None) -> None:
    """Serve the PostgreSQL wire protocol: psql, JDBC, ODBC and drivers connect as analysts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(SWITCH_INTERVAL)
    overrides = {"query_timeout": query_timeout, "max_statements_per_analyst": max_statements_per_analyst,
                 "shutdown_grace": shutdown_grace}
    asyncio.run(_serve(_config_path(config_path), host, port, overrides))


_ANALYSTS = re.compile(r"^analysts:\s*$")


def set_password(text: str, analyst: str, verifier: str) -> str:
    """Return the YAML ``text`` with ``analysts.<analyst>.password`` set to ``verifier``.

    Edits the file textually so comments and layout survive; handles the block
    style (``alice:`` then indented keys) and the flow style
    (``alice: {epsilon: 10.0, ...}``).
    """
    import yaml

    raw = yaml.safe_load(text) or {}
    if analyst not in (raw.get("analysts") or {}):
        raise click.ClickException(f"analyst {analyst!r} is not in the config's analysts section")
    lines = text.splitlines(keepends=True)
    in_section = False
    for i, line in enumerate(lines):
        if _ANALYSTS.match(line):
            in_section = True
            continue
        if in_section and line.strip() and not line[0].isspace():
            break
        m = re.match(rf"^(\s+){re.escape(analyst)}:\s*(.*?)\s*$", line) if in_section else None
        if not m:
            continue
        indent, rest = m.group(1), m.group(2)
        quoted = f'"{verifier}"'
        if rest.startswith("{"):
            body = re.sub(r",?\s*password:\s*(\"[^\"]*\"|'[^']*'|[^,}]*)", "", rest[1:rest.rindex("}")]).strip()
            body = f"{body}, password: {quoted}" if body else f"password: {quoted}"
            lines[i] = f"{indent}{analyst}: {{{body}}}\n"
        else:
            child = indent + "  "
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > len(indent)):
                if re.match(r"^\s+password:", lines[j]):
                    child = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
                    del lines[j]
                    continue
                child = lines[j][: len(lines[j]) - len(lines[j].lstrip())] if lines[j].strip() else child
                j += 1
            lines.insert(j, f"{child}password: {quoted}\n")
        new = "".join(lines)
        if (yaml.safe_load(new)["analysts"][analyst] or {}).get("password") != verifier:
            raise click.ClickException("could not edit the config file safely; set the password by hand")
        return new
    raise click.ClickException(f"analyst {analyst!r} not found under analysts:")


@click.command()
@click.argument("analyst")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="privsql YAML config to edit (default: config/privsql.yaml or $PRIVSQL_CONFIG)")
@click.password_option("--password", prompt="Password", help="the analyst's new password (prompted)")
def passwd(analyst: str, config_path: str | None, password: str) -> None:
    """Store a SCRAM-SHA-256 verifier (never the password) for ANALYST in the config."""
    path = _config_path(config_path)
    text = path.read_text()
    path.write_text(set_password(text, analyst, make_verifier(password)))
    click.echo(f"password set for analyst {analyst} in {path}")
