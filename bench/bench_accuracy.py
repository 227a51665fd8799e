"""Accuracy benchmark: privsql against smartnoise-sql at equal total privacy cost per query.

    bash bench/setup_peers.sh                 # once: smartnoise-sql + matplotlib in bench/.venv-peers
    python bench/bench_accuracy.py [--runs 200] [--eps 0.1,0.5,1,5]

Data: the PUMS sample (sample_data/people.csv, 1,000 people, one row each).
Queries: COUNT(*), SUM(income), AVG(income), VAR(income), VAR(age), a 2-column
GROUP BY count, and ``SELECT sex, COUNT(*), AVG(income) ... GROUP BY sex``.

For each query and nominal ε, SmartNoise is asked what it charges
(``PrivateReader.get_privacy_cost``: ε for every noisy value it computes, e.g.
3ε for ``sex, COUNT(*), AVG(income) GROUP BY sex`` — COUNT(*), SUM(income),
COUNT(income) — and 4ε with its default ``censor_dims`` key count). privsql is
then given that same total ε for the query. Each system answers the query
``--runs`` times with fresh noise; the error of each released cell is
``|noisy − exact|`` (exact from DuckDB, in each system's own semantics: privsql's
VAR_SAMP against the exact sample variance, SmartNoise's VAR — which it computes
as a population variance — against the exact population variance). Reported:
median and p90 absolute error over all runs × cells, and privsql ÷ SmartNoise
with a bootstrap 95% interval of the ratio of medians.

Two SmartNoise settings are compared:
  * ``fair`` (primary): ``censor_dims: false`` (every group present in the data is
    released without a δ-costing threshold, as privsql does for keys whose public
    domain is declared) and ``clamp_counts: true`` (negative counts → 0, as privsql).
  * ``default``: SmartNoise's metadata defaults (``censor_dims: true`` — a noisy key
    count per query, charged ε, and a τ threshold that spends δ = 1e-6;
    ``clamp_counts: false``). Cells it censors are left out of its error and counted.

SmartNoise runs in its own venv (bench/.venv-peers) in a subprocess
(``--worker smartnoise``) that prints JSON; privsql runs in-process through
``privsql.engine.Engine`` with the free-repeat cache off. The PNG is drawn by the
peers venv too (``--worker plot``), so privsql's venv needs no matplotlib.

Outputs: markdown tables on stdout, bench/accuracy.png, raw numbers in
bench/out/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = ROOT / "sample_data" / "people.csv"
PEERS_PY = BENCH / ".venv-peers" / "bin" / "python"
OUT = BENCH / "out"
PNG = BENCH / "accuracy.png"
DEFAULT_EPS = (0.1, 0.5, 1.0, 5.0)
SN_DEFAULT_DELTA = 1e-6

# id, label, privsql SQL, SmartNoise SQL, number of key columns, output metrics
# (column index in the result → metric label), exact SQL in privsql's / SmartNoise's semantics.
QUERIES = [
    {"id": "count", "label": "COUNT(*)",
     "privsql": "SELECT COUNT(*) AS v FROM people",
     "sn": "SELECT COUNT(*) AS v FROM PUMS.PUMS",
     "nkeys": 0, "metrics": {0: "COUNT(*)"},
     "exact": "SELECT COUNT(*) FROM people"},
    {"id": "sum", "label": "SUM(income)",
     "privsql": "SELECT SUM(income) AS v FROM people",
     "sn": "SELECT SUM(income) AS v FROM PUMS.PUMS",
     "nkeys": 0, "metrics": {0: "SUM(income)"},
     "exact": "SELECT SUM(income) FROM people"},
    {"id": "avg", "label": "AVG(income)",
     "privsql": "SELECT AVG(income) AS v FROM people",
     "sn": "SELECT AVG(income) AS v FROM PUMS.PUMS",
     "nkeys": 0, "metrics": {0: "AVG(income)"},
     "exact": "SELECT AVG(income) FROM people"},
    {"id": "var_income", "label": "VAR(income)",
     "privsql": "SELECT VAR_SAMP(income) AS v FROM people",
     "sn": "SELECT VAR(income) AS v FROM PUMS.PUMS",
     "nkeys": 0, "metrics": {0: "VAR(income)"},
     "exact": "SELECT VAR_SAMP(income) FROM people",
     "exact_sn": "SELECT VAR_POP(income) FROM people"},
    {"id": "var_age", "label": "VAR(age)",
     "privsql": "SELECT VAR_SAMP(age) AS v FROM people",
     "sn": "SELECT VAR(age) AS v FROM PUMS.PUMS",
     "nkeys": 0, "metrics": {0: "VAR(age)"},
     "exact": "SELECT VAR_SAMP(age) FROM people",
     "exact_sn": "SELECT VAR_POP(age) FROM people"},
    {"id": "gb2", "label": "GROUP BY sex, married: COUNT(*)",
     "privsql": "SELECT sex, married, COUNT(*) AS n FROM people GROUP BY sex, married",
     "sn": "SELECT sex, married, COUNT(*) AS n FROM PUMS.PUMS GROUP BY sex, married",
     "nkeys": 2, "metrics": {2: "GROUP BY sex, married: COUNT(*)"},
     "exact": "SELECT sex, married, COUNT(*) FROM people GROUP BY sex, married"},
    {"id": "gbavg", "label": "GROUP BY sex: COUNT(*), AVG(income)",
     "privsql": "SELECT sex, COUNT(*) AS n, AVG(income) AS a FROM people GROUP BY sex",
     "sn": "SELECT sex, COUNT(*) AS n, AVG(income) AS a FROM PUMS.PUMS GROUP BY sex",
     "nkeys": 1, "metrics": {1: "GROUP BY sex: COUNT(*)", 2: "GROUP BY sex: AVG(income)"},
     "exact": "SELECT sex, COUNT(*), AVG(income) FROM people GROUP BY sex"},
]

# SmartNoise metadata: the PUMS_pid layout (shared/datasets/PUMS_pid.yaml), user-level with
# max_ids 1, income 0–500000, age 0–100, sex/married/educ/race strings.
SN_TABLE = {
    "max_ids": 1, "row_privacy": False, "rows": 1000,
    "age": {"type": "int", "lower": 0, "upper": 100},
    "sex": {"type": "string"}, "educ": {"type": "string"}, "race": {"type": "string"},
    "income": {"type": "int", "lower": 0, "upper": 500000},
    "married": {"type": "string"},
    "pid": {"type": "int", "private_id": True},
}
SN_SETTINGS = {
    "fair": {"censor_dims": False, "clamp_counts": True, "delta": SN_DEFAULT_DELTA},
    "default": {"delta": SN_DEFAULT_DELTA},  # metadata defaults: censor_dims true, clamp_counts false
}

PRIVSQL_CONFIG = """
backend: {{kind: duckdb, path: ":memory:"}}
budget_store: {{kind: sqlite, path: {store}}}
cache: {{enabled: false}}          # every run gets fresh noise (no free repeats)
defaults: {{max_epsilon_per_query: 1000}}
tables:
  people:                          # as config/privsql.yaml
    source: {source}
    privacy_unit: pid
    one_row_per_unit: true
    max_groups: 1
    max_rows: 1
    columns:
      pid: {{type: int}}
      age: {{type: int, lower: 0, upper: 100}}
      sex: {{type: text, values: ["0", "1"]}}
      educ: {{type: int, lower: 1, upper: 16}}
      race: {{type: int}}
      income: {{type: float, lower: 0, upper: 500000{income_flags}}}
      married: {{type: int, lower: 0, upper: 1, values: [0, 1]}}
analysts:
  bench: {{epsilon: 1000000000000}}
"""


# --------------------------------------------------------------------------- SmartNoise worker
def smartnoise_worker(job: dict) -> dict:
    """Runs in bench/.venv-peers. job: {settings, eps, runs, queries: [[id, sql]], costs_only}."""
    import warnings

    import pandas as pd
    import snsql
    from snsql import Privacy
    from snsql.sql._mechanisms import laplace as sn_laplace

    warnings.filterwarnings("ignore")
    # Performance only: SmartNoise binary-searches each mechanism's Laplace scale with OpenDP every
    # time a query is rewritten (~65 ms each). The scale is a pure function of (bounds, max_contrib,
    # ε), so memoise it; the first call per key runs SmartNoise's own search.
    original = sn_laplace.Laplace._compute_noise_scale
    scales: dict = {}

    def memo_scale(self):  # type: ignore[no-untyped-def]
        if self.scale is not None:
            return
        key = (float(self.lower), float(self.upper), self.max_contrib, float(self.epsilon))
        if key not in scales:
            original(self)
            scales[key] = self.scale
        self.scale = scales[key]

    sn_laplace.Laplace._compute_noise_scale = memo_scale
    df = pd.read_csv(job["data"], dtype={"sex": str, "married": str, "educ": str, "race": str})
    out: dict = {"versions": {}, "results": {}}
    import importlib.metadata as md

    for name in ("smartnoise-sql", "opendp", "pandas", "sqlalchemy"):
        try:
            out["versions"][name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    for setting, opts in job["settings"].items():
        table = dict(SN_TABLE)
        table.update({k: v for k, v in opts.items() if k != "delta"})
        meta = {"": {"PUMS": {"PUMS": table}}}
        res = out["results"].setdefault(setting, {})
        for eps in job["eps"]:
            reader = snsql.from_df(df, privacy=Privacy(epsilon=eps, delta=opts["delta"]), metadata=meta)
            for qid, sql in job["queries"]:
                cell = res.setdefault(qid, {}).setdefault(repr(eps), {})
                try:
                    cost = reader.get_privacy_cost([sql])
                    cell["cost"] = [float(cost[0]), float(cost[1])]
                    costs = [c for c in reader._get_mechanism_costs(sql) if c]
                    cell["mechanisms"] = len(costs)
                    if job.get("costs_only"):
                        continue
                    # The exact aggregates are deterministic here (one row per pid), so compute them once
                    # with SmartNoise's own rewritten subquery and pass them as `pre_aggregated`
                    # (SmartNoise's documented API); noise, censoring and post-processing are its own.
                    subquery, _ = reader._rewrite(sql)
                    exact = reader.reader._execute_ast(subquery)
                    answers = []
                    t0 = time.perf_counter()
                    for _ in range(job["runs"]):
                        rows = reader.execute(sql, pre_aggregated=exact)
                        answers.append([[_jsonable(v) for v in r] for r in rows[1:]])
                    cell["seconds"] = time.perf_counter() - t0
                    cell["answers"] = answers
                except Exception as e:  # noqa: BLE001 - reported as SmartNoise's refusal
                    cell["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return out


def _jsonable(v):  # type: ignore[no-untyped-def]
    import numbers

    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def run_peer(job: dict, *, background: bool = False):  # type: ignore[no-untyped-def]
    """Run a worker in the peers venv; its JSON answer goes through a file (no pipe can fill up)."""
    if not PEERS_PY.exists():
        sys.exit(f"missing {PEERS_PY}: run `bash bench/setup_peers.sh` first")
    OUT.mkdir(parents=True, exist_ok=True)
    cmd = [str(PEERS_PY), str(Path(__file__).resolve()), "--worker", job["worker"]]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("VIRTUAL_ENV", None)
    fd, job_name = tempfile.mkstemp(dir=OUT, prefix="job-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(job, f)
    out = open(job_name.replace("job-", "answer-"), "w+")  # noqa: SIM115 - closed in finish_peer
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in finish_peer
    with open(job_name) as stdin:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=err, text=True, env=env)
    proc.bench_files = (job_name, out, err)  # type: ignore[attr-defined]
    if background:
        return proc
    return finish_peer(proc)


def finish_peer(proc) -> dict:  # type: ignore[no-untyped-def]
    job_name, out, err = proc.bench_files
    try:
        if proc.wait() != 0:
            err.seek(0)
            sys.exit(f"peer worker failed (exit {proc.returncode}):\n{err.read()[-3000:]}")
        out.seek(0)
        return json.loads(out.read())
    finally:
        out.close()
        err.close()
        for name in (job_name, out.name):
            Path(name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- privsql side
def exact_answers(queries: list[dict]) -> dict:
    """{qid: {'privsql': {keys: [values]}, 'sn': {...}}} from DuckDB directly (no clamping, no noise)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE TABLE people AS SELECT * FROM read_csv('{DATA}', types={{'sex': 'VARCHAR', "
                "'married': 'VARCHAR'})")
    truth: dict = {}
    for q in queries:
        nk = q["nkeys"]
        for side, sql in (("privsql", q["exact"]), ("sn", q.get("exact_sn", q["exact"]))):
            rows = con.execute(sql).fetchall()
            truth.setdefault(q["id"], {})[side] = {tuple(str(k) for k in r[:nk]): [float(v) for v in r[nk:]]
                                                   for r in rows}
    con.close()
    return truth


def make_engine(privsql_path: str | None, not_null: bool = False):  # type: ignore[no-untyped-def]
    if privsql_path:
        sys.path.insert(0, str(Path(privsql_path).resolve()))
        for name in [m for m in sys.modules if m == "privsql" or m.startswith("privsql.")]:
            del sys.modules[name]
    import privsql
    from privsql.config import parse_config
    from privsql.engine import Engine

    tmp = tempfile.mkdtemp(prefix="privsql-acc-")
    text = PRIVSQL_CONFIG.format(store=Path(tmp) / "budget.sqlite", source=DATA,
                                 income_flags=", not_null: true" if not_null else "")
    return Engine(parse_config(text)), Path(privsql.__file__).resolve().parent, tmp


def privsql_runs(engine, q: dict, eps_total: float, runs: int) -> list:  # type: ignore[no-untyped-def]
    answers = []
    for _ in range(runs):
        res = engine.execute(q["privsql"], analyst="bench", epsilon=eps_total)
        answers.append([[_jsonable(v) for v in r] for r in res.rows])
    return answers


# --------------------------------------------------------------------------- statistics
def cell_errors(answers: list, q: dict, truth: dict) -> tuple[dict, int, int]:
    """{metric column: [abs errors]} over runs × released cells; (#cells expected, #cells censored)."""
    nk = q["nkeys"]
    errs: dict = {col: [] for col in q["metrics"]}
    expected = censored = 0
    for rows in answers:
        got = {tuple(str(k) for k in r[:nk]): r for r in rows}
        for key, true_vals in truth.items():
            expected += 1
            row = got.get(key)
            if row is None:
                censored += 1
                continue
            for col in q["metrics"]:
                errs[col].append(abs(float(row[col]) - true_vals[col - nk]))
    return errs, expected, censored


def quantile(xs: list, p: float) -> float:
    import numpy as np

    return float(np.quantile(np.asarray(xs, dtype=float), p)) if xs else math.nan


def ratio_ci(a: list, b: list, reps: int = 1000, seed: int = 1) -> tuple[float, float]:
    """Bootstrap 95% interval of median(a) / median(b)."""
    import numpy as np

    if not a or not b:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    aa, bb = np.asarray(a, float), np.asarray(b, float)
    ma = np.median(aa[rng.integers(0, len(aa), (reps, len(aa)))], axis=1)
    mb = np.median(bb[rng.integers(0, len(bb), (reps, len(bb)))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((ma == 0) & (mb == 0), 1.0, ma / mb)  # 0/0: equal (as the point estimate)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return math.nan, math.nan
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def _mean(xs: list) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if b > 0:
        return a / b
    return 1.0 if a == 0 else math.inf


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e6 or ax < 1e-2:
        return f"{x:.3g}"
    if ax >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def fmt_ratio(x: float) -> str:
    return "—" if x is None or math.isnan(x) or math.isinf(x) else f"{x:.2f}"


# --------------------------------------------------------------------------- main
def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "os": platform.platform()}


def summarize(setting: str, sn: dict, ps: dict, queries: list, eps_list: list, truth: dict) -> list[dict]:
    rows = []
    for q in queries:
        for eps in eps_list:
            s = sn[setting][q["id"]][repr(eps)]
            p = ps[setting][q["id"]][repr(eps)]
            p_err, _, _ = cell_errors(p["answers"], q, truth[q["id"]]["privsql"])
            if "error" in s:
                s_err, s_exp, s_cens = {c: [] for c in q["metrics"]}, 0, 0
            else:
                s_err, s_exp, s_cens = cell_errors(s["answers"], q, truth[q["id"]]["sn"])
            for col, label in q["metrics"].items():
                pm, sm = quantile(p_err[col], 0.5), quantile(s_err[col], 0.5)
                lo, hi = ratio_ci(p_err[col], s_err[col])
                rows.append({
                    "setting": setting, "query": q["id"], "metric": label, "eps": eps,
                    "eps_charged": p["eps"], "sn_delta": s.get("cost", [math.nan, math.nan])[1],
                    "sn_mechanisms": s.get("mechanisms"),
                    "privsql_median": pm, "privsql_p90": quantile(p_err[col], 0.9),
                    "sn_median": sm, "sn_p90": quantile(s_err[col], 0.9),
                    "ratio": _ratio(pm, sm),
                    "ratio_mean": _ratio(_mean(p_err[col]), _mean(s_err[col])),
                    "ratio_p90": _ratio(quantile(p_err[col], 0.9), quantile(s_err[col], 0.9)),
                    "ratio_lo": lo, "ratio_hi": hi,
                    "sn_error": s.get("error"), "sn_censored": (s_cens / s_exp) if s_exp else 0.0,
                    "privsql_mean": (sum(p_err[col]) / len(p_err[col])) if p_err[col] else math.nan,
                    "sn_mean": (sum(s_err[col]) / len(s_err[col])) if s_err[col] else math.nan,
                })
    return rows


def markdown(rows: list[dict], setting: str, title: str) -> str:
    out = [f"### {title}", "",
           "| query | ε (nominal) | ε charged (both) | privsql median | privsql p90 | SmartNoise median "
           "| SmartNoise p90 | ratio median (95% CI) | ratio p90 | ratio mean |"
           + (" SN censored |" if setting == "default" else ""),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if setting == "default" else "")]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    for r in sorted((r for r in rows if r["setting"] == setting), key=lambda r: (metrics.index(r["metric"]), r["eps"])):
        if r["sn_error"]:
            sn_med = sn_p90 = "refused¹"
            ratio = ratio90 = ratiom = "—"
        else:
            sn_med, sn_p90 = fmt(r["sn_median"]), fmt(r["sn_p90"])
            ratio = f"**{fmt_ratio(r['ratio'])}** ({fmt_ratio(r['ratio_lo'])}–{fmt_ratio(r['ratio_hi'])})"
            ratio90 = fmt_ratio(r["ratio_p90"])
            ratiom = fmt_ratio(r["ratio_mean"])
        line = (f"| {r['metric']} | {r['eps']:g} | {r['eps_charged']:g} | {fmt(r['privsql_median'])} | "
                f"{fmt(r['privsql_p90'])} | {sn_med} | {sn_p90} | {ratio} | {ratio90} | {ratiom} |")
        if setting == "default":
            line += f" {100 * r['sn_censored']:.0f}% |"
        out.append(line)
    errors = {re.sub(r"epsilon=[0-9.e+-]+", "epsilon=ε", r["sn_error"])
              for r in rows if r["setting"] == setting and r["sn_error"]}
    for e in sorted(errors):
        out.append(f"\n¹ SmartNoise, at every ε: `{e}`")
    return "\n".join(out)


def verdict(rows: list[dict], setting: str = "fair") -> str:
    """Per metric: met (every median ratio ≤ target), within noise (some median ratio above the target
    but every bootstrap interval reaches it), or not met (privsql significantly above the target)."""
    out = [f"### Targets (SmartNoise `{setting}` settings): privsql ≤ SmartNoise; ≤ half on AVG and VAR", ""]
    by_metric: dict = {}
    for r in rows:
        if r["setting"] == setting:
            by_metric.setdefault(r["metric"], []).append(r)
    for metric, rs in by_metric.items():
        rs = [r for r in rs if not r["sn_error"]]
        if not rs:
            out.append(f"- {metric}: SmartNoise refuses it at every ε; privsql answers (target met by default).")
            continue
        target = 0.5 if ("AVG" in metric or "VAR" in metric) else 1.0
        worst = max(rs, key=lambda r: r["ratio"])
        worst_mean = max(r["ratio_mean"] for r in rs)
        if worst["ratio"] <= target:
            state = "met"
        elif all(r["ratio_lo"] <= target for r in rs):
            state = "within noise of the target (every 95% interval reaches it)"
        else:
            state = "NOT met"
        out.append(f"- {metric}: median ratios {fmt_ratio(min(r['ratio'] for r in rs))}–{fmt_ratio(worst['ratio'])} "
                   f"(worst at ε = {worst['eps']:g}, 95% CI {fmt_ratio(worst['ratio_lo'])}–"
                   f"{fmt_ratio(worst['ratio_hi'])}); mean-|error| ratios ≤ {fmt_ratio(worst_mean)}; "
                   f"target ≤ {target:g}: **{state}**")
    return "\n".join(out)


def plot_worker(job: dict) -> dict:
    """Bar chart of privsql ÷ SmartNoise per query and ε (one panel per SmartNoise setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = job["rows"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    eps_list = sorted({r["eps"] for r in rows})
    colors = plt.get_cmap("viridis")([i / max(len(eps_list) - 1, 1) * 0.85 for i in range(len(eps_list))])
    titles = {"fair": "SmartNoise censor_dims off, clamp_counts on (primary)",
              "default": "SmartNoise metadata defaults (censor_dims on, δ = 1e-6)"}
    floor = 0.02
    fig, axes = plt.subplots(len(settings), 1, figsize=(13, 3.9 * len(settings)), squeeze=False)
    width = 0.8 / len(eps_list)
    for ax, setting in zip(axes[:, 0], settings):
        for i, metric in enumerate(metrics):
            target = 0.5 if ("AVG" in metric or "VAR" in metric) else 1.0
            ax.hlines(target, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=0.8)
            for j, eps in enumerate(eps_list):
                r = next((x for x in rows if x["setting"] == setting and x["metric"] == metric
                          and x["eps"] == eps), None)
                if r is None:
                    continue
                x = i - 0.4 + width * (j + 0.5)
                if r["sn_error"]:
                    if j == 0:
                        ax.text(i, 0.06, "SmartNoise\nrefuses", ha="center", fontsize=7, color="tab:red")
                    continue
                ratio = r["ratio"]
                if ratio is None or math.isnan(ratio) or math.isinf(ratio):
                    continue
                ax.bar(x, max(ratio, floor), width * 0.92, color=colors[j],
                       label=f"nominal ε = {eps:g}" if f"nominal ε = {eps:g}" not in
                       ax.get_legend_handles_labels()[1] else None)
                lo, hi = r["ratio_lo"], r["ratio_hi"]
                if not (math.isnan(lo) or math.isnan(hi)):
                    ax.vlines(x, max(lo, floor), max(hi, floor), colors="black", linewidth=0.7)
                rm = r.get("ratio_mean")
                if rm is not None and not math.isnan(rm) and rm > 0:
                    ax.plot([x], [max(rm, floor)], marker="o", ms=3, color="tab:red")
                if ratio == 0:
                    ax.text(x, floor * 1.1, "0", ha="center", fontsize=6)
        ax.set_yscale("log")
        ax.set_ylim(floor, 4)
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([m.replace(": ", ":\n") for m in metrics], fontsize=7.5)
        ax.set_ylabel("privsql ÷ SmartNoise error", fontsize=8)
        ax.set_title(titles.get(setting, setting), fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.tick_params(axis="y", labelsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="o", ms=3, color="tab:red", linestyle=""))
    labels.append("ratio of mean |error|")
    handles.append(plt.Line2D([], [], color="black", linestyle="--", linewidth=0.8))
    labels.append("target (≤ 1; ≤ 0.5 for AVG, VAR)")
    fig.suptitle(f"privsql ÷ smartnoise-sql {job.get('sn_version', '')} at equal total ε per query: ratio of "
                 f"median |error| (bars, bootstrap 95% CI), {job['runs']} runs, PUMS sample (1,000 people); "
                 "below 1 = privsql more accurate", fontsize=9.5, y=0.995)
    fig.legend(handles, labels, loc="upper center", fontsize=7.5, ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 0.965))
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(job["png"], dpi=110)
    return {"png": job["png"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="noisy answers per query, ε and system")
    ap.add_argument("--eps", default=",".join(f"{e:g}" for e in DEFAULT_EPS), help="nominal ε list")
    ap.add_argument("--queries", default="", help="comma-separated query ids (default: all)")
    ap.add_argument("--no-defaults", action="store_true", help="skip the SmartNoise-defaults comparison")
    ap.add_argument("--privsql-path", default="", help="import privsql from this folder (e.g. a scratch copy)")
    ap.add_argument("--privsql-rev", default="",
                    help="benchmark privsql as committed at this git revision (exported to bench/out/), "
                         "e.g. HEAD while the work tree has uncommitted edits")
    ap.add_argument("--nullable-income", dest="not_null_income", action="store_false",
                    help="do not declare income `not_null: true` (config/privsql.yaml does; it lets COUNT(*) "
                         "share AVG(income)'s noisy count)")
    ap.add_argument("--json", default=str(OUT / "accuracy.json"), help="raw results")
    ap.add_argument("--png", default=str(PNG))
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        job = json.loads(sys.stdin.read())
        result = smartnoise_worker(job) if args.worker == "smartnoise" else plot_worker(job)
        sys.stdout.write(json.dumps(result))
        return

    t_start = time.perf_counter()
    eps_list = [float(e) for e in args.eps.split(",")]
    wanted = set(filter(None, args.queries.split(",")))
    queries = [q for q in QUERIES if not wanted or q["id"] in wanted]
    settings = {k: v for k, v in SN_SETTINGS.items() if not (args.no_defaults and k == "default")}
    base_job = {"worker": "smartnoise", "settings": settings, "eps": eps_list, "data": str(DATA),
                "queries": [[q["id"], q["sn"]] for q in queries]}

    # 1. What SmartNoise charges for each query at each nominal ε (no data touched).
    costs = run_peer(dict(base_job, runs=0, costs_only=True))
    # 2. SmartNoise's noisy answers, in the background while privsql runs here.
    peer = run_peer(dict(base_job, runs=args.runs), background=True)

    truth = exact_answers(queries)
    privsql_path = args.privsql_path or (export_rev(args.privsql_rev) if args.privsql_rev else None)
    engine, privsql_dir, tmp = make_engine(privsql_path, args.not_null_income)
    ps: dict = {}
    t0 = time.perf_counter()
    for setting in settings:
        for q in queries:
            for eps in eps_list:
                c = costs["results"][setting][q["id"]][repr(eps)]
                # privsql gets the total ε SmartNoise charges; if SmartNoise refuses the query, count
                # the noisy values it would need (VAR: SUM(x²), SUM(x), COUNT(x) → 3ε).
                charged = c["cost"][0] if "cost" in c else eps * (3 + (setting == "default"))
                charged = float(f"{charged:.12g}")  # 0.30000000000000004 → 0.3
                ps.setdefault(setting, {}).setdefault(q["id"], {})[repr(eps)] = {
                    "eps": charged, "answers": privsql_runs(engine, q, charged, args.runs)}
    t_privsql = time.perf_counter() - t0
    engine.close()
    shutil.rmtree(tmp, ignore_errors=True)
    sn = finish_peer(peer)
    t_sn = sum(c.get("seconds", 0.0) for s in sn["results"].values() for qq in s.values() for c in qq.values())
    for setting in settings:  # SmartNoise's refusal text comes from the cost call too
        for q in queries:
            for eps in eps_list:
                c = costs["results"][setting][q["id"]][repr(eps)]
                if "error" in c:
                    sn["results"][setting][q["id"]][repr(eps)]["error"] = c["error"]

    rows = []
    for setting in settings:
        rows += summarize(setting, sn["results"], ps, queries, eps_list, truth)

    import duckdb
    import numpy

    import privsql  # noqa: F401

    versions = dict(sn["versions"])
    if args.privsql_rev:
        label = f"{args.privsql_rev} = commit {Path(privsql_path).name.removeprefix('privsql-')} (exported)"
    elif args.privsql_path:
        label = f"from {privsql_dir}"
    else:
        label = f"work tree at {git_rev()}" + (" + uncommitted edits" if tree_dirty() else "")
    versions.update({"privsql": label, "duckdb": duckdb.__version__,
                     "numpy": numpy.__version__})
    import importlib.metadata as md

    try:
        versions["opendp (privsql venv)"] = md.version("opendp")
    except md.PackageNotFoundError:
        versions["opendp (privsql venv)"] = "not installed"
    OUT.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows, "versions": versions, "machine": machine(),
                                           "runs": args.runs, "eps": eps_list}, indent=1, default=str))
    plot = run_peer({"worker": "plot", "rows": rows, "png": args.png, "runs": args.runs,
                     "sn_version": versions.get("smartnoise-sql", "")})

    m = machine()
    print(f"machine: {m['cpu']}, nproc {m['nproc']}, Python {m['python']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"runs: {args.runs} per query × ε × system; privsql {t_privsql:.0f} s, SmartNoise {t_sn:.0f} s "
          f"(noise loop), wall {time.perf_counter() - t_start:.0f} s; plot: {plot['png']}\n")
    print(markdown(rows, "fair", "Primary: SmartNoise with censor_dims off, clamp_counts on "
                   "(privsql gets the ε SmartNoise charges)"))
    print()
    print(verdict(rows))
    if "default" in settings:
        print()
        print(verdict(rows, "default"))
        print()
        print(markdown(rows, "default", "Secondary: SmartNoise metadata defaults (censor_dims on, δ = 1e-6; "
                       "privsql gets the ε SmartNoise charges, spends no δ)"))


def export_rev(rev: str) -> str:
    """privsql/ as committed at ``rev``, exported (git archive) to bench/out/privsql-<sha>/."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = OUT / f"privsql-{sha}"
    if not (dest / "privsql" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "privsql"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(dest)


def tree_dirty() -> bool:
    try:
        return bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "privsql"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    except Exception:  # noqa: BLE001
        return False


def git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    main()
