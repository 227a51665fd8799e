"""Soak run of the generative differential test (issue 10, part 4): many generated queries per backend.

    python bench/soak_generative.py                                   # 100,000 queries on each backend
    python bench/soak_generative.py --count 20000 --backends duckdb --seed 7
    python bench/soak_generative.py --count 2000 --diagnose 10        # minimise the first failure of each class
    python bench/soak_generative.py --count 100000 --record           # also rewrite the soak section of RESULTS.md

Each backend gets the adversarial tables of ``tests/generative/adversarial.py``; queries come from
the seeded grammar of ``tests/generative/grammar.py`` and run in chunks of 50 through the engine on
D, on D minus one adversarial person (rotating per chunk) and, every other chunk, on the empty
table (``tests/generative/harness.py`` explains why that suffices). Prints per backend the numbers
of queries answered / refused / failed on D, the neighbour runs, the failures by class and the
time. ``--diagnose N`` finds, for the first failure of up to N classes, the data that triggers it
and a minimised query. Needs PostgreSQL at 127.0.0.1:5432 for ``postgres`` and pyspark + Java 17
for ``spark`` (on Spark every query runs through the engine too: expect ~1 s per query).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from generative.adversarial import BACKENDS, world  # noqa: E402
from generative.harness import (  # noqa: E402
    Stats,
    diagnose,
    failure_class,
    fixed_salt,
    generate,
    quiet_logs,
    run_generated,
)

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Generative differential soak"


def soak(kind: str, count: int, seed: int, chunk: int, diagnose_classes: int, tmp: Path) -> tuple[Stats, list[str]]:
    queries = generate(seed, count)
    reports: list[str] = []
    last = [time.perf_counter()]

    def progress(stats: Stats) -> None:
        if time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            print(f"  ... {stats.line()}", flush=True)

    with world(kind, tmp / kind) as w:
        stats = run_generated(w, queries, chunk=chunk, progress=progress)
        firsts: dict[str, object] = {}
        for f in stats.failures:
            firsts.setdefault(failure_class(f), f)
        with fixed_salt(), quiet_logs():
            for cls, f in list(firsts.items())[:diagnose_classes]:
                d = diagnose(w, f)  # type: ignore[arg-type]
                reports.append(f"### {cls}\n- data: {d.data}; triggered by: {d.trigger}\n"
                               f"- minimal SQL: `{d.minimal_sql}`\n- backend error: {d.backend_error}\n"
                               f"- analyst saw: {d.outcome}")
    return stats, reports


def record(lines: list[str], args: argparse.Namespace, total_seconds: float) -> None:
    """Replace (or append) the soak section of bench/RESULTS.md with this run's figures."""
    text = RESULTS.read_text() if RESULTS.exists() else "# privsql benchmark results\n"
    body = [SECTION, "",
            f"Latest run {dt.date.today().isoformat()}: `python bench/soak_generative.py --count {args.count} "
            f"--seed {args.seed} --backends {','.join(args.backends)}` on 2 cores "
            f"({total_seconds / 60:.1f} min in all). Per backend: queries on D (answered / refused before any "
            "data was read / failed after the reservation), neighbour runs on D minus one adversarial person "
            "and on the empty table, and failures (a backend error, or an outcome that differs on a "
            "neighbour). Failure classes are listed in tests/generative/test_regressions.py.", "",
            "| backend | queries | answered | refused | failed on D | neighbour runs | failures | time |",
            "|---|---:|---:|---:|---:|---:|---:|---:|", *lines, ""]
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = "\n".join(body) + "\n"
    text = pattern.sub(new, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + new
    RESULTS.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="queries per backend (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--backends", type=lambda s: s.split(","), default=list(BACKENDS),
                        help="comma-separated: duckdb,postgres,spark (default all)")
    parser.add_argument("--chunk", type=int, default=50, help="queries per chunk / neighbour variant (default 50)")
    parser.add_argument("--diagnose", type=int, default=0, help="diagnose the first failure of up to N classes")
    parser.add_argument("--record", action="store_true", help="write the figures into bench/RESULTS.md")
    args = parser.parse_args()
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    lines: list[str] = []
    start = time.perf_counter()
    failed = False
    with tempfile.TemporaryDirectory(prefix="privsql-soak-") as tmp:
        for kind in args.backends:
            stats, reports = soak(kind, args.count, args.seed, args.chunk, args.diagnose, Path(tmp))
            print(stats.line(), flush=True)
            print(f"  refusals: {dict(stats.refusals.most_common())}")
            for cls, n in Counter(failure_class(f) for f in stats.failures).most_common():
                print(f"  {n:6d}  {cls}")
            for report in reports:
                print(report, flush=True)
            lines.append(f"| {kind} | {stats.total:,} | {stats.answered:,} | {stats.refused:,} | {stats.failed:,} | "
                         f"{stats.neighbour_runs:,} | {len(stats.failures):,} | {stats.seconds / 60:.1f} min |")
            failed = failed or bool(stats.failures)
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")
    if args.record:
        record(lines, args, total)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
