"""Build sample_data/ for privsql: deterministic, re-runnable.

- people.csv: the 1,000-row PUMS sample with person ids (PUMS_pid.csv from the
  SmartNoise SDK datasets, MIT licence), copied byte for byte.
- visits.csv.gz: a generated table where each person has many rows (20,000
  people, ~200,000 visits, heavy-tailed: a few people have ~1,000 visits), so
  per-user contribution bounds are exercised.
- depts.csv: a small public table (no personal data) for joins.

Usage: python scripts/make_sample_data.py [--shared ../shared/datasets] [--people N --visits N]
The generator uses a fixed seed; the random numbers here only shape synthetic
test data and play no part in privacy.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np

DEPTS = ["cardiology", "dermatology", "emergency", "oncology", "pediatrics", "radiology"]
ROOT = Path(__file__).resolve().parent.parent


def generate_visits(n_people: int, n_visits: int, seed: int = 20261126) -> dict[str, np.ndarray]:
    """Synthetic visits: heavy-tailed visits per person, a few extreme users."""
    rng = np.random.default_rng(seed)
    weights = rng.pareto(1.2, n_people) + 1.0
    weights /= weights.sum()
    weights[:5] = 1_000 / n_visits  # five people with ~1,000 visits each
    weights[5:] *= (1 - weights[:5].sum()) / weights[5:].sum()
    pid = rng.choice(np.arange(1, n_people + 1), size=n_visits, p=weights)
    pid.sort(kind="stable")
    dept = rng.choice(len(DEPTS), size=n_visits, p=[0.2, 0.1, 0.3, 0.1, 0.15, 0.15])
    day = np.datetime64("2025-01-01") + rng.integers(0, 365, size=n_visits).astype("timedelta64[D]")
    duration = np.round(np.clip(rng.gamma(2.0, 25.0, n_visits), 5, 600), 1)
    cost = np.round(np.clip(rng.lognormal(5.5, 1.0, n_visits), 10, 20000), 2)
    return {"pid": pid, "dept": dept, "day": day, "duration_min": duration, "cost": cost}


def write_visits(path: Path, n_people: int, n_visits: int) -> None:
    cols = generate_visits(n_people, n_visits)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("pid,dept,day,duration_min,cost\n")
        for p, d, day, dur, c in zip(cols["pid"], cols["dept"], cols["day"], cols["duration_min"], cols["cost"]):
            f.write(f"{p},{DEPTS[d]},{day},{dur:.1f},{c:.2f}\n")


def write_depts(path: Path) -> None:
    buildings = ["A", "B", "A", "C", "B", "C"]
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("dept,building,floor\n")
        for i, (d, b) in enumerate(zip(DEPTS, buildings)):
            f.write(f"{d},{b},{i % 3 + 1}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--out", default=str(ROOT / "sample_data"))
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--visits", type=int, default=200_000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(args.shared) / "PUMS_pid.csv"
    if src.exists():
        shutil.copyfile(src, out / "people.csv")
    elif not (out / "people.csv").exists():
        raise SystemExit(f"{src} not found and sample_data/people.csv missing")
    write_visits(out / "visits.csv.gz", args.people, args.visits)
    write_depts(out / "depts.csv")
    print(f"wrote {out}/people.csv, visits.csv.gz ({args.visits} rows), depts.csv")


if __name__ == "__main__":
    main()
