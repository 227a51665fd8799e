"""Free repeats: an analyst who repeats a query gets the same noisy answer, at no cost.

Re-releasing an answer already given is post-processing, so it costs nothing;
fresh noise on a repeat would instead let an analyst average the noise away
(and would cost budget). The answer is cached per analyst in the budget store,
so it survives restarts and is shared by every proxy process on that store.
A different analyst, or a different ε/δ, or a config change that alters the
plan, gets a fresh (charged) answer.

Blobs are JSON (never pickle: the store must not be a code-execution vector).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from typing import Any

from privsql.results import ColumnAccuracy, OutputColumn, PrivacyReport, QueryResult

FORMAT_VERSION = 1


def cache_key(normalised_sql: str, plan_fingerprint: str, epsilon: float, delta: float) -> str:
    """Same SQL (after parameter binding and normalisation), same plan, same ε and δ."""
    text = json.dumps([FORMAT_VERSION, normalised_sql, plan_fingerprint, repr(float(epsilon)), repr(float(delta))])
    return hashlib.sha256(text.encode()).hexdigest()


def _encode_value(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return {"$ts": v.isoformat()}
    if isinstance(v, dt.date):
        return {"$date": v.isoformat()}
    if isinstance(v, decimal.Decimal):
        return {"$dec": str(v)}
    if isinstance(v, float) and v != v:  # NaN
        return {"$nan": True}
    return v


def _decode_value(v: Any) -> Any:
    if isinstance(v, dict):
        if "$ts" in v:
            return dt.datetime.fromisoformat(v["$ts"])
        if "$date" in v:
            return dt.date.fromisoformat(v["$date"])
        if "$dec" in v:
            return decimal.Decimal(v["$dec"])
        if "$nan" in v:
            return float("nan")
    return v


def encode_result(result: QueryResult) -> bytes:
    p = result.privacy
    assert p is not None
    doc = {
        "v": FORMAT_VERSION,
        "columns": [[c.name, c.type] for c in result.columns],
        "rows": [[_encode_value(v) for v in row] for row in result.rows],
        "cell_ci": result.cell_ci,
        "accuracy": [[c.column, c.mechanism, c.scale, c.ci95, c.approximate] for c in p.columns],
        "epsilon": p.epsilon,
        "delta": p.delta,
        "notes": list(p.notes),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_result(blob: bytes, *, analyst: str, epsilon_remaining: float, delta_remaining: float) -> QueryResult:
    """A cached answer, reported as a free repeat (ε = δ = 0 spent now)."""
    doc = json.loads(blob)
    if doc.get("v") != FORMAT_VERSION:
        raise ValueError("cached answer has an unknown format")
    columns = [OutputColumn(n, t) for n, t in doc["columns"]]
    rows = [tuple(_decode_value(v) for v in row) for row in doc["rows"]]
    accuracy = tuple(ColumnAccuracy(*a) for a in doc["accuracy"])
    cell_ci = [tuple(c) for c in doc["cell_ci"]] if doc.get("cell_ci") is not None else None
    report = PrivacyReport(analyst=analyst, epsilon=0.0, delta=0.0, epsilon_remaining=epsilon_remaining,
                           delta_remaining=delta_remaining, columns=accuracy, cached=True,
                           cell_ci=tuple(cell_ci or ()), notes=tuple(doc.get("notes", ())))
    notice = (f"privsql: free repeat of an earlier answer (originally ε={doc['epsilon']:g}); "
              f"remaining ε={epsilon_remaining:.6g}, δ={delta_remaining:.3g}")
    return QueryResult(columns=columns, rows=rows, privacy=report, notices=[notice], cell_ci=cell_ci)
