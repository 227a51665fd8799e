"""YAML configuration → typed, validated metadata.

Every error names the offending key path and its line in the file, e.g.
``config/privsql.yaml:12: tables.people.max_rows: must be a positive integer``.

The configuration is the *only* source of privacy parameters: contribution
bounds (``max_groups``, ``max_rows``), value bounds (``lower``/``upper``) and
public key domains (``values``) are never derived from the data.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from privsql.errors import ConfigError

COLUMN_TYPES = ("int", "float", "text", "bool", "date", "timestamp")
NUMERIC_TYPES = ("int", "float")
BACKEND_KINDS = ("duckdb", "postgres", "spark")
STORE_KINDS = ("sqlite", "postgres")
ACCOUNTING_KINDS = ("pure", "zcdp")

DEFAULT_CONFIG_PATH = "config/privsql.yaml"


@dataclass(frozen=True)
class ColumnMeta:
    """A column of a configured table.

    ``lower``/``upper`` are clamping bounds (required for SUM/AVG over the
    column); ``values`` is a public domain of group keys: when set, GROUP BY on
    this column returns every declared value and spends no δ.
    """

    name: str
    type: str
    lower: float | None = None
    upper: float | None = None
    values: tuple[Any, ...] | None = None
    not_null: bool = False  # declared NOT NULL; enforced by the backend (checked at start-up, never assumed)

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    @property
    def bounded(self) -> bool:
        return self.lower is not None and self.upper is not None


@dataclass(frozen=True)
class TableMeta:
    """A configured table.

    ``privacy_unit`` names the column identifying a person; ``None`` makes the
    table public (never charged, joined freely). Neighbouring databases differ
    by all rows of one person. ``one_row_per_unit`` declares that the privacy
    unit is unique; it is enforced by a PRIMARY KEY / UNIQUE constraint that the
    backend checks, never assumed from the data.
    """

    name: str
    source: str | None
    privacy_unit: str | None
    max_groups: int
    max_rows: int
    columns: dict[str, ColumnMeta]
    one_row_per_unit: bool = False
    schema: str | None = None  # backend schema for tables that already exist there
    #: other columns that hold a privacy unit (a join's second private table): never a group key
    unit_aliases: frozenset[str] = frozenset()

    @property
    def is_private(self) -> bool:
        return self.privacy_unit is not None


@dataclass(frozen=True)
class AnalystConfig:
    """An analyst and their lifetime privacy budget."""

    name: str
    epsilon: float
    delta: float
    accounting: str = "pure"  # 'pure': ε and δ add up; 'zcdp': ρ adds up, (ε, δ) reported from total ρ
    password: str | None = None  # SCRAM-SHA-256 verifier for the wire server


@dataclass(frozen=True)
class Defaults:
    epsilon: float = 1.0
    delta: float = 0.0
    max_epsilon_per_query: float = 10.0
    analyst: str | None = None  # whose budget the CLI charges when --analyst is not given


@dataclass(frozen=True)
class Config:
    backend: dict[str, Any]
    budget_store: dict[str, Any]
    defaults: Defaults
    tables: dict[str, TableMeta]
    analysts: dict[str, AnalystConfig]
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)

    def resolve_path(self, value: str) -> str:
        """A path from the config, relative to the config file's project folder."""
        if value == ":memory:" or os.path.isabs(value):
            return value
        return str((self.base_dir / value).resolve())

    def table(self, name: str) -> TableMeta | None:
        return self.tables.get(name.lower())


# ---------------------------------------------------------------------------
# YAML loading with line numbers


class _Marked:
    """Maps key paths to the line they were written on."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[str, ...], int] = {}

    def record(self, node: yaml.Node, path: tuple[str, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = str(key.value)
                self.lines[path + (k,)] = key.start_mark.line + 1
                self.record(value, path + (k,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.record(item, path + (str(i),))

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        line = None
        probe = path
        while probe and line is None:
            line = self.lines.get(probe)
            probe = probe[:-1]
        where = f"{self.source}:{line}" if line else self.source
        key = ".".join(path) if path else "(top level)"
        return ConfigError(f"{where}: {key}: {message}")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a YAML config file (default: ``config/privsql.yaml``).

    Relative paths inside it (data sources, budget store) are resolved against
    the folder above ``config/`` when the file lives in a ``config`` folder,
    otherwise against the file's own folder.
    """
    p = Path(path or os.environ.get("PRIVSQL_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    p = p.resolve()
    base = p.parent.parent if p.parent.name == "config" else p.parent
    return parse_config(text, source=str(p), base_dir=base, path=p)


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None,
                 path: Path | None = None) -> Config:
    """Validate config text; raise ConfigError naming the key and line."""
    marks = _Marked(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if node is None or raw is None:
        raise ConfigError(f"{source}: the config file is empty")
    marks.record(node, ())
    if not isinstance(raw, dict):
        raise marks.error((), "the config must be a mapping of sections")
    known = {"backend", "defaults", "budget_store", "tables", "analysts", "server", "sql", "cache"}
    for key in raw:
        if key not in known:
            raise marks.error((str(key),), f"unknown section; expected one of {', '.join(sorted(known))}")

    cache = _section(raw, "cache", marks, {})
    _only_keys(cache, ("cache",), marks, {"enabled"})
    if not isinstance(cache.get("enabled", True), bool):
        raise marks.error(("cache", "enabled"), "must be true or false")

    backend = _section(raw, "backend", marks, {"kind": "duckdb", "path": ":memory:"})
    kind = backend.get("kind", "duckdb")
    if kind not in BACKEND_KINDS:
        raise marks.error(("backend", "kind"), f"must be one of {', '.join(BACKEND_KINDS)}, not {kind!r}")
    backend = {"kind": kind, **backend}

    store = _section(raw, "budget_store", marks, {"kind": "sqlite", "path": "var/budget.sqlite"})
    skind = store.get("kind", "sqlite")
    if skind not in STORE_KINDS:
        raise marks.error(("budget_store", "kind"), f"must be one of {', '.join(STORE_KINDS)}, not {skind!r}")
    if skind == "sqlite":
        store = {"kind": "sqlite", "path": store.get("path", "var/budget.sqlite"), **store}
    elif "dsn" not in store:
        raise marks.error(("budget_store",), "a postgres budget store needs a 'dsn'")

    d = _section(raw, "defaults", marks, {})
    _only_keys(d, ("defaults",), marks, {"epsilon", "delta", "max_epsilon_per_query", "analyst"})
    defaults = Defaults(
        epsilon=_positive(d.get("epsilon", 1.0), ("defaults", "epsilon"), marks),
        delta=_probability(d.get("delta", 0.0), ("defaults", "delta"), marks),
        max_epsilon_per_query=_positive(d.get("max_epsilon_per_query", 10.0),
                                        ("defaults", "max_epsilon_per_query"), marks),
        analyst=str(d["analyst"]) if d.get("analyst") is not None else None,
    )

    tables_raw = raw.get("tables")
    if not isinstance(tables_raw, dict) or not tables_raw:
        raise marks.error(("tables",), "at least one table must be configured")
    tables = {}
    for name, t in tables_raw.items():
        meta = _table(str(name), t, marks)
        if meta.name in tables:
            raise marks.error(("tables", str(name)), "table names are case-insensitive; this one is declared twice")
        tables[meta.name] = meta

    analysts_raw = raw.get("analysts") or {}
    if not isinstance(analysts_raw, dict):
        raise marks.error(("analysts",), "must be a mapping of analyst name to budget")
    analysts = {str(n): _analyst(str(n), a, marks) for n, a in analysts_raw.items()}
    if defaults.analyst is not None and defaults.analyst not in analysts:
        raise marks.error(("defaults", "analyst"), f"names no analyst declared under analysts: {defaults.analyst!r}")

    return Config(backend=backend, budget_store=store, defaults=defaults, tables=tables,
                  analysts=analysts, raw=raw, path=path, base_dir=base_dir or Path.cwd())


def _section(raw: dict, key: str, marks: _Marked, default: dict) -> dict:
    value = raw.get(key, default)
    if value is None:
        return dict(default)
    if not isinstance(value, dict):
        raise marks.error((key,), "must be a mapping")
    return dict(value)


def _only_keys(d: dict, path: tuple[str, ...], marks: _Marked, allowed: set[str]) -> None:
    for key in d:
        if key not in allowed:
            raise marks.error(path + (str(key),), f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _number(value: Any, path: tuple[str, ...], marks: _Marked) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise marks.error(path, f"must be a finite number, not {value!r}")
    return float(value)


def _positive(value: Any, path: tuple[str, ...], marks: _Marked) -> float:
    v = _number(value, path, marks)
    if v <= 0:
        raise marks.error(path, f"must be greater than 0, not {value!r}")
    return v


def _probability(value: Any, path: tuple[str, ...], marks: _Marked) -> float:
    v = _number(value, path, marks)
    if not 0 <= v < 1:
        raise marks.error(path, f"must be in [0, 1), not {value!r}")
    return v


def _positive_int(value: Any, path: tuple[str, ...], marks: _Marked) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise marks.error(path, f"must be a positive integer, not {value!r}")
    return value


def _identifier(name: str, path: tuple[str, ...], marks: _Marked) -> str:
    if not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise marks.error(path, "names must be letters, digits and underscores, not starting with a digit")
    return name.lower()


def _table(name: str, t: Any, marks: _Marked) -> TableMeta:
    path = ("tables", name)
    if not isinstance(t, dict):
        raise marks.error(path, "must be a mapping with source, privacy_unit, columns, ...")
    _only_keys(t, path, marks, {"source", "privacy_unit", "max_groups", "max_rows", "columns",
                                "one_row_per_unit", "schema", "public"})
    _identifier(name, path, marks)
    cols_raw = t.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        raise marks.error(path + ("columns",), "each table must declare its columns")
    columns: dict[str, ColumnMeta] = {}
    for cname, c in cols_raw.items():
        col = _column(str(cname), c, path + ("columns", str(cname)), marks)
        columns[col.name] = col
    unit = t.get("privacy_unit")
    public = bool(t.get("public", False))
    if unit is None and not public:
        raise marks.error(path + ("privacy_unit",),
                          "every table needs a privacy_unit (the column identifying a person), "
                          "or 'public: true' to declare it holds no personal data")
    if unit is not None and public:
        raise marks.error(path + ("public",), "a public table cannot also have a privacy_unit")
    if unit is not None:
        unit = str(unit).lower()
        if unit not in columns:
            columns[unit] = ColumnMeta(name=unit, type="text")
    one_row = t.get("one_row_per_unit", False)
    if not isinstance(one_row, bool):
        raise marks.error(path + ("one_row_per_unit",), "must be true or false")
    source = t.get("source")
    if source is not None and not isinstance(source, str):
        raise marks.error(path + ("source",), "must be a file path or a table name")
    return TableMeta(
        name=name.lower(),
        source=source,
        privacy_unit=unit,
        max_groups=_positive_int(t.get("max_groups", 1), path + ("max_groups",), marks),
        max_rows=_positive_int(t.get("max_rows", 1), path + ("max_rows",), marks),
        columns=columns,
        one_row_per_unit=one_row,
        schema=t.get("schema"),
    )


def _column(name: str, c: Any, path: tuple[str, ...], marks: _Marked) -> ColumnMeta:
    if isinstance(c, str):
        c = {"type": c}
    if not isinstance(c, dict):
        raise marks.error(path, "must be a mapping like {type: int, lower: 0, upper: 100}")
    _only_keys(c, path, marks, {"type", "lower", "upper", "values", "not_null"})
    not_null = c.get("not_null", False)
    if not isinstance(not_null, bool):
        raise marks.error(path + ("not_null",), "must be true or false")
    _identifier(name, path, marks)
    ctype = c.get("type")
    if ctype not in COLUMN_TYPES:
        raise marks.error(path + ("type",), f"must be one of {', '.join(COLUMN_TYPES)}, not {ctype!r}")
    lower = c.get("lower")
    upper = c.get("upper")
    if (lower is None) != (upper is None):
        raise marks.error(path, "give both lower and upper, or neither")
    if lower is not None:
        if ctype not in NUMERIC_TYPES:
            raise marks.error(path + ("lower",), f"bounds apply to int and float columns, not {ctype}")
        lower = _number(lower, path + ("lower",), marks)
        upper = _number(upper, path + ("upper",), marks)
        if lower > upper:
            raise marks.error(path, f"lower ({lower:g}) must not exceed upper ({upper:g})")
        if max(abs(lower), abs(upper)) > 1e15:
            raise marks.error(path, "bounds beyond ±1e15 are not supported")
    values = c.get("values")
    if values is not None:
        if not isinstance(values, list) or not values:
            raise marks.error(path + ("values",), "must be a non-empty list of the public key values")
        values = tuple(_coerce_value(v, ctype, path + ("values",), marks) for v in values)
        if len(set(values)) != len(values):
            raise marks.error(path + ("values",), "lists a value twice")
    return ColumnMeta(name=name.lower(), type=ctype, lower=lower, upper=upper, values=values, not_null=not_null)


def _coerce_value(v: Any, ctype: str, path: tuple[str, ...], marks: _Marked) -> Any:
    try:
        if ctype == "text":
            return str(v)
        if ctype == "int":
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            return int(v)
        if ctype == "float":
            return float(v)
        if ctype == "bool":
            if not isinstance(v, bool):
                raise ValueError
            return v
    except (TypeError, ValueError):
        raise marks.error(path, f"value {v!r} is not a valid {ctype}") from None
    return v


def _analyst(name: str, a: Any, marks: _Marked) -> AnalystConfig:
    path = ("analysts", name)
    if not isinstance(a, dict):
        raise marks.error(path, "must be a mapping like {epsilon: 10.0, delta: 1.0e-6}")
    _only_keys(a, path, marks, {"epsilon", "delta", "accounting", "password"})
    accounting = a.get("accounting", "pure")
    if accounting not in ACCOUNTING_KINDS:
        raise marks.error(path + ("accounting",), f"must be one of {', '.join(ACCOUNTING_KINDS)}")
    if "epsilon" not in a:
        raise marks.error(path, "needs an epsilon budget")
    delta = _probability(a.get("delta", 0.0), path + ("delta",), marks)
    if accounting == "zcdp" and delta <= 0:
        raise marks.error(path + ("delta",), "zCDP accounting needs a delta > 0 to report (ε, δ)")
    password = a.get("password")
    if password is not None and not isinstance(password, str):
        raise marks.error(path + ("password",), "must be a SCRAM-SHA-256 verifier string")
    return AnalystConfig(name=name, epsilon=_positive(a["epsilon"], path + ("epsilon",), marks),
                         delta=delta, accounting=accounting, password=password)
