"""Spark backend (pyspark): privsql's answer for data beyond one machine.

Configuration (the ``backend:`` section)::

    backend:
      kind: spark
      master: local[2]          # default local[2]; a cluster: spark://host:7077, yarn, k8s://https://...
      app_name: privsql
      cache: true               # read each source once into a persisted snapshot (default true)
      conf:                     # any Spark configuration, passed to the session builder
        spark.executor.memory: 8g
        spark.sql.shuffle.partitions: 400

Sources: a CSV file (``.csv``/``.csv.gz``, with a header line), a Parquet file
or folder (``.parquet``), or a table already in the Spark catalog (``db.table``,
Hive/Delta/...). Each becomes a temporary view with exactly the declared
columns cast to the declared types; the rewrite only ever names these views.
File paths may be any URI Spark reads (``hdfs://``, ``s3a://``) when the
cluster has the connectors.

Guarantees:

* **types checked at start-up**: the typed snapshot is built with ANSI casts, so a
  value that does not match its declared type fails start-up with ConfigError
  instead of silently becoming NULL;
* **one row per person is checked, never assumed**: Spark has no constraints,
  so a table declaring ``one_row_per_unit`` is counted at start-up (no NULL
  and no repeated privacy unit) and must be cached, so later queries read the
  very snapshot that was checked;
* **no data-dependent errors**: queries run with ``spark.sql.ansi.enabled =
  false`` (Spark 4 turns it on by default), so arithmetic overflow, casts and
  division give NULL/∞ — which the rewrite clamps — rather than raising an
  error that would reveal a row;
* **exact sums**: per-person contributions are BIGINT grid units, and Spark's
  SUM(BIGINT) is exact below 2^63 (more than 8·10^9 people at the largest
  per-person contribution of 2^30 units);
* **no file access from queries**: ``spark.sql.runSQLOnFiles = false``;
* **timeouts and cancels**: each query's jobs carry a tag; the timeout, or the
  statement being cancelled (CancelRequest, client gone, shutdown), cancels them
  and the analyst gets QueryCanceled (its budget stays spent).
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from typing import Any

from sqlglot import exp

from privsql.backends.base import Backend
from privsql.cancel import BUDGET_NOTE, TIMEOUT, guard
from privsql.config import Config, TableMeta
from privsql.errors import BackendError, ConfigError, QueryCanceled
from privsql.sql.rewrite import SqlTarget

log = logging.getLogger(__name__)

SPARK_TYPES = {"int": "BIGINT", "float": "DOUBLE", "text": "STRING", "bool": "BOOLEAN", "date": "DATE",
               "timestamp": "TIMESTAMP"}
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
}

_lock = threading.Lock()
_users = 0  # SparkBackends open in this process (they share the one SparkSession)
_views = itertools.count(1)


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class SparkBackend(Backend):
    target = SqlTarget(dialect="spark", safe_numeric="DOUBLE", hash_function="spark")

    def __init__(self, config: Config) -> None:
        global _users
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise ConfigError("backend: the spark backend needs pyspark (pip install pyspark; Java 17+)") from None
        b = config.backend
        self.master = str(b.get("master", "local[2]"))
        self.cache = bool(b.get("cache", True))
        conf = dict(DEFAULT_CONF)
        if self.master.startswith("local"):
            conf["spark.sql.shuffle.partitions"] = "8"
        conf.update({str(k): str(v) for k, v in (b.get("conf") or {}).items()})
        builder = SparkSession.builder.master(self.master).appName(str(b.get("app_name", "privsql")))
        for k, v in conf.items():
            builder = builder.config(k, v)
        with _lock:
            try:
                self.spark = builder.getOrCreate()
            except Exception as exc:  # JVM missing, master unreachable, ...
                raise BackendError(f"the Spark session could not start (master {self.master}): "
                                   f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
                                   ) from None
            _users += 1
        self._closed = threading.Event()
        sc = self.spark.sparkContext
        sc.setLogLevel(str(b.get("log_level", "ERROR")))
        self.spark.conf.set("spark.sql.runSQLOnFiles", "false")
        self._prefix = f"privsql{next(_views)}_"
        self._views: dict[str, str] = {}
        self._frames: list[Any] = []
        try:
            self.spark.conf.set("spark.sql.ansi.enabled", "true")  # strict casts while loading and checking
            for table in config.tables.values():
                self._load(config, table)
        except ConfigError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise ConfigError(f"Spark backend could not load the tables: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
        self.spark.conf.set("spark.sql.ansi.enabled", "false")  # queries: NULL/∞ instead of data-dependent errors

    # ------------------------------------------------------------------ start-up
    def _load(self, config: Config, table: TableMeta) -> None:
        source = table.source or table.name
        lower = source.lower()
        if lower.endswith(CSV_SUFFIXES):
            path = config.resolve_path(source) if "://" not in source else source
            sep = "\t" if lower.endswith(".tsv") else ","
            df = self.spark.read.csv(path, header=True, sep=sep, inferSchema=False, mode="FAILFAST")
        elif lower.endswith(".parquet"):
            df = self.spark.read.parquet(config.resolve_path(source) if "://" not in source else source)
        else:
            name = f"{table.schema}.{source}" if table.schema and "." not in source else source
            try:
                df = self.spark.table(name)
            except Exception:
                raise ConfigError(f"table {table.name}: no file or Spark catalog table named {name!r}") from None
        available = {c.lower(): c for c in df.columns}
        missing = [c for c in table.columns if c not in available]
        if missing:
            raise ConfigError(f"table {table.name}: source {source} has no column(s) {', '.join(missing)}")
        typed = df.selectExpr(*[f"CAST({_q(available[c.name])} AS {SPARK_TYPES[c.type]}) AS {_q(c.name)}"
                                for c in table.columns.values()])
        if self.cache:
            from pyspark import StorageLevel

            typed = typed.persist(StorageLevel.MEMORY_AND_DISK)
            self._frames.append(typed)
        view = self._prefix + table.name
        typed.createOrReplaceTempView(view)
        try:
            if table.one_row_per_unit and table.privacy_unit:
                if not self.cache:
                    raise ConfigError(f"table {table.name} declares one_row_per_unit: on Spark this is checked on "
                                      "a cached snapshot, so it needs backend.cache: true")
                unit = _q(table.privacy_unit)
                rows, units, distinct = self.spark.sql(
                    f"SELECT COUNT(*), COUNT({unit}), COUNT(DISTINCT {unit}) FROM {_q(view)}").collect()[0]
                if not rows == units == distinct:
                    raise ConfigError(f"table {table.name} declares one_row_per_unit but {table.privacy_unit} is "
                                      f"not unique (or NULL) in {source}")
            elif self.cache:
                self.spark.sql(f"SELECT COUNT(*) FROM {_q(view)}").collect()  # materialise and type-check now
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"table {table.name}: a value in {source} does not match the declared types "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
        self._views[table.name] = view

    def table_ref(self, table: TableMeta) -> exp.Table:
        view = self._views.get(table.name)
        if view is None:
            raise ConfigError(f"table {table.name} was not loaded at start-up")
        return exp.table_(exp.to_identifier(view, quoted=True))

    # ------------------------------------------------------------------ queries
    def run(self, sql: str, *, timeout: float | None = None) -> list[tuple[Any, ...]]:
        """Run one query; its jobs carry a tag that the timeout and the current statement's cancel
        (:mod:`privsql.cancel`) cancel. Raises QueryCanceled / BackendError."""
        if self._closed.is_set():
            raise BackendError("the Spark backend is closed")
        sc = self.spark.sparkContext
        tag = f"privsql-{uuid.uuid4().hex}"
        sc.addJobTag(tag)
        sc.setInterruptOnCancel(True)
        try:
            with guard(lambda: sc.cancelJobsWithTag(tag), timeout) as state:
                try:
                    return [tuple(r) for r in self.spark.sql(sql).collect()]
                except Exception as exc:
                    if state.fired.is_set():
                        raise QueryCanceled((state.reason or TIMEOUT) + BUDGET_NOTE) from None
                    log.warning("Spark backend query failed: %s", type(exc).__name__)
                    raise BackendError(f"the backend failed: {type(exc).__name__}") from None
        finally:
            sc.removeJobTag(tag)

    def close(self) -> None:
        global _users
        if self._closed.is_set():
            return
        self._closed.set()
        with _lock:
            try:
                for view in self._views.values():
                    self.spark.catalog.dropTempView(view)
                for df in self._frames:
                    df.unpersist()
            except Exception:  # the JVM may already be gone
                pass
            _users -= 1
            if _users == 0:
                self.spark.stop()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
