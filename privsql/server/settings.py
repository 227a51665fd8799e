"""The ``server:`` section of the privsql config: declared once, with defaults and help.

```yaml
server:
  host: 127.0.0.1
  port: 5433
  auth: scram          # or trust (local development only)
  tls_cert: /path/cert.pem
  tls_key: /path/key.pem
  query_timeout: 60    # seconds
  max_statement_size: 1048576        # bytes; longer statements get 54000
  max_statements_per_analyst: 4      # running at once; more wait queue_timeout s, then 53300
  shutdown_grace: 5    # seconds SIGTERM lets statements finish before interrupting them
```
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from privsql.errors import ConfigError
from privsql.sql.parse import MAX_STATEMENT_BYTES


@dataclass(frozen=True)
class ServerSettings:
    """Wire-server settings; every field documents itself in ``SETTINGS_HELP``."""

    host: str = "127.0.0.1"
    port: int = 5433
    auth: str = "scram"
    tls_cert: str | None = None
    tls_key: str | None = None
    query_timeout: float = 60.0
    idle_timeout: float = 3600.0
    auth_timeout: float = 30.0
    max_message_size: int = 2 * MAX_STATEMENT_BYTES + (64 << 10)
    max_connections: int = 256
    workers: int = 8
    database: str = "privsql"
    max_statement_size: int = MAX_STATEMENT_BYTES
    max_statements_per_analyst: int = 4
    queue_timeout: float = 2.0
    shutdown_grace: float = 5.0

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


SETTINGS_HELP: dict[str, str] = {
    "host": "address to listen on",
    "port": "TCP port to listen on",
    "auth": "'scram' (SCRAM-SHA-256 with verifiers from analysts.<name>.password) or 'trust' (no password; local development only)",
    "tls_cert": "PEM certificate file; with tls_key, SSLRequest is answered with TLS",
    "tls_key": "PEM private key file for tls_cert",
    "query_timeout": "seconds one statement may run before it is cancelled (57014); budget stays spent",
    "idle_timeout": "seconds an idle connection is kept open",
    "auth_timeout": "seconds a client has to complete startup and authentication",
    "max_message_size": "largest frontend message accepted, in bytes; larger ones close the connection (08P01). "
                        "Above max_statement_size, so a statement that is too long gets 54000 and the "
                        "connection stays usable",
    "max_connections": "connections served at once; more are refused with 53300",
    "workers": "threads running engine and catalog work off the event loop",
    "database": "database name reported to clients (current_database(), pg_database)",
    "max_statement_size": f"longest statement text in bytes (at most {MAX_STATEMENT_BYTES}); longer ones get 54000 "
                          "and the connection stays usable",
    "max_statements_per_analyst": "statements (parsing included) one analyst may run at once, over all connections",
    "queue_timeout": "seconds a statement waits for one of its analyst's slots before 53300",
    "shutdown_grace": "seconds SIGTERM lets running statements finish before interrupting them "
                      "(the server exits within about shutdown_grace + 3 s)",
}

_AUTH_METHODS = ("scram", "trust")


def _coerce(name: str, value: Any, default: Any) -> Any:
    kind = type(default) if default is not None else str
    if isinstance(default, bool) or kind is bool:
        return bool(value)
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"server.{name}: expected {kind.__name__}, got {value!r}") from exc


def load_settings(raw: Mapping[str, Any] | None, **overrides: Any) -> ServerSettings:
    """Build settings from the config's ``server:`` mapping plus non-None overrides (CLI flags)."""
    section = dict(raw or {})
    unknown = set(section) - {f.name for f in fields(ServerSettings)}
    if unknown:
        raise ConfigError(f"server: unknown setting(s) {', '.join(sorted(unknown))}")
    section.update({k: v for k, v in overrides.items() if v is not None})
    defaults = ServerSettings()
    values = {name: _coerce(name, value, getattr(defaults, name)) for name, value in section.items() if value is not None}
    settings = ServerSettings(**values)
    if settings.auth not in _AUTH_METHODS:
        raise ConfigError(f"server.auth: expected one of {', '.join(_AUTH_METHODS)}, got {settings.auth!r}")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("server: tls_cert and tls_key must be given together")
    for name in ("query_timeout", "idle_timeout", "auth_timeout", "max_message_size", "max_connections", "workers",
                 "max_statement_size", "max_statements_per_analyst", "queue_timeout", "shutdown_grace"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"server.{name}: must be positive")
    if settings.max_statement_size > MAX_STATEMENT_BYTES:
        raise ConfigError(f"server.max_statement_size: at most {MAX_STATEMENT_BYTES} (the parser's limit)")
    return settings
