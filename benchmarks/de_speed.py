"""Speed of the protein case study's DE arm, before and after, side by side: `make bench-de`
(or `python benchmarks/de_speed.py --help`).

Trains the SVR teachers of seeds 1..K (dataset=protein, teacher=svr) into a scratch store, then
runs `arm=case_study_de` with the case study's student (rbf, 100 units, batch 10) as whole
`dfkd distill` processes: one seed alone and the population of K seeds, each with the code of
git revision --before (extracted into a scratch folder and put first on PYTHONPATH) and with this
tree's code, round robin, --repeats times. Prints the median of the runs' own training wall time
(wall_s), milliseconds per student step and per seed-step, the projection to the case study's
100,000 steps in minutes per seed, and the before / after ratio of each configuration.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "3043867"  # main before the batched DE step (all generations' draws, merged teachers)
CASE_STUDY_STEPS = 100_000  # 1000 epochs x 100 steps


def extract(rev: str, into: Path) -> Path:
    """The package of git revision `rev` (with its configs inside, as a wheel ships them)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "dfkd_cli", "configs"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "configs").rename(into / "dfkd_cli" / "configs")
    return into


def dfkd(args: list[str], cwd: Path, pythonpath: Path | None = None) -> None:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "dfkd_cli", *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"dfkd {' '.join(args)} failed:\n{proc.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir",
                        default=os.environ.get("DFKD_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--before", default=BEFORE, help="git revision of the old code")
    parser.add_argument("--seeds", type=int, default=5, help="population size K")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of 100 steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dfkd-de-"))
    before = extract(args.before, work / "before")
    data = Path(args.data_dir).resolve()
    common = ["dataset=protein", f"data_dir={data}", f"teacher_store={work / 'store'}",
              "teacher=svr", "progress=false"]
    population = f"seeds=[{','.join(str(s) for s in range(1, args.seeds + 1))}]"
    dfkd(["train-teacher", *common, population, f"hydra.run.dir={work / 'teachers'}"], work)
    run = [*common, "arm=case_study_de", "student=rbf", "student.net.units=100",
           "optimizer.lr=1e-3", "optimizer.weight_decay=1e-6", "steps_per_epoch=100",
           f"epochs={args.epochs}"]
    configs = [(f"{code}, {k} seed{'s' if k > 1 else ''}", code, k, ["seed=1"] if k == 1
                else [population]) for k in (1, args.seeds) for code in ("before", "after")]
    walls: dict[str, list[float]] = {name: [] for name, *_ in configs}
    for r in range(args.repeats):  # round robin: a changing load weighs on every row alike
        for i, (name, code, _, seeds) in enumerate(configs):
            out = work / f"run{i}-{r}"
            dfkd(["distill", *run, *seeds, f"hydra.run.dir={out}"], work,
                 before if code == "before" else None)
            wall = float(pd.read_csv(next(out.rglob("metrics.csv"))).wall_s.iloc[0])
            walls[name].append(wall)
            print(f"{name} ({r + 1}/{args.repeats}): {wall:.2f} s", file=sys.stderr, flush=True)
    steps = args.epochs * 100
    rows = []
    for name, code, k, _ in configs:
        median = statistics.median(walls[name])
        per_seed_step = median / steps / k
        rows.append({"configuration": name, "median_s": round(median, 2),
                     "min_max_s": f"{min(walls[name]):.2f}-{max(walls[name]):.2f}",
                     "ms_per_step": round(1000 * median / steps, 2),
                     "ms_per_seed_step": round(1000 * per_seed_step, 2),
                     "min_per_seed_100k": round(per_seed_step * CASE_STUDY_STEPS / 60, 1)})
    table = pd.DataFrame(rows)
    old = table.set_index("configuration").median_s
    table["before_over_after"] = [round(old[n.replace("after", "before")] / old[n], 2)
                                  if n.startswith("after") else "" for n in table.configuration]
    print(f"\narm=case_study_de, protein, SVR teachers, rbf student of 100 units, "
          f"{args.epochs} x 100 steps per run, {args.repeats} repeats, before = {args.before}")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
