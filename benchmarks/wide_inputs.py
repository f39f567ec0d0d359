"""Wide inputs: the teacher's training and the default recipe's student steps on a wide
synthetic dataset (docs/performance.md, "Wide inputs"); part of `make bench`.

    python benchmarks/wide_inputs.py [--features 500] [--rows 8000] [--before REV]

Writes Friedman #1 with --features columns (the first 5 informative) as a CSV, then times whole
`dfkd` processes, round robin, --repeats times, in CPU seconds: `train-teacher` (mlp500, the paper's protocol of
batch 16, --teacher-epochs epochs, into a fresh store each time: inference of the input domain,
its statistics and the checkpoint included) and `distill` with the default recipe (bounded,
the copula prior, selection=fidelity) for --epochs epochs of 10 steps. With --before, the same
rows also run the code of that git revision (extracted and put first on PYTHONPATH, as
benchmarks/de_speed.py does), side by side, and the table gives before / after of each median.
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

from de_speed import extract  # the revision extraction

from dfkd_cli.data.datasets import friedman1


def cpu_seconds(args: list[str], cwd: Path, code: Path | None) -> float:
    """Run one dfkd process (the code at `code` first on PYTHONPATH, else this tree's); return
    its CPU seconds (user + system), which a shared machine's load changes far less than its
    wall time."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "dfkd_cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"dfkd {' '.join(args)} failed:\n{proc.stderr.read()}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=500)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=100, help="student epochs of 10 steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=None, help="git revision of the old code to compare")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dfkd-wide-"))
    table = friedman1(args.rows, 1.0, n_features=args.features)
    pd.DataFrame(table.x, columns=table.features).assign(y=table.y[:, 0]).to_csv(
        work / "wide.csv", index=False, float_format="%.9g")
    codes = {"after": None} | ({"before": extract(args.before, work / "before")}
                               if args.before else {})
    data = ["dataset=csv", f"dataset.path={work / 'wide.csv'}", "dataset.name=wide",
            "progress=false", "seed=1"]
    seconds: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):  # round robin: a changing load weighs on every row alike
        for code, path in codes.items():
            store = work / f"store-{code}"
            teacher = ["train-teacher", *data, f"epochs={args.teacher_epochs}",
                       f"teacher_store={store}-{r}", f"hydra.run.dir={work}/t-{code}-{r}"]
            seconds.setdefault(("train-teacher", code), []).append(cpu_seconds(teacher, work, path))
            out = work / f"d-{code}-{r}"
            student = ["distill", *data, f"epochs={args.epochs}", f"teacher_store={store}-0",
                       f"hydra.run.dir={out}"]
            seconds.setdefault(("distill", code), []).append(cpu_seconds(student, work, path))
            run_wall_s = float(pd.read_csv(next(out.rglob("metrics.csv"))).wall_s.iloc[0])
            seconds.setdefault(("distill: training", code), []).append(run_wall_s)
            print(f"{code} ({r + 1}/{args.repeats}): teacher "
                  f"{seconds['train-teacher', code][-1]:.1f} s, distill "
                  f"{seconds['distill', code][-1]:.1f} s", file=sys.stderr, flush=True)
    rows = []
    for (what, code), values in seconds.items():
        median = statistics.median(values)
        row = {"measure": what, "code": code, "median_s": round(median, 2),
               "min_max_s": f"{min(values):.2f}-{max(values):.2f}"}
        if what == "distill: training":
            row["ms_per_student_step"] = round(1000 * median / (args.epochs * 10), 2)
        if code == "after" and args.before:
            row["before_over_after"] = round(statistics.median(seconds[what, "before"]) / median, 2)
        rows.append(row)
    print(f"\nFriedman #1, {args.features} features, {args.rows} rows; mlp500 teacher "
          f"({args.teacher_epochs} epochs, batch 16); default recipe, {args.epochs} x 10 student "
          f"steps; {args.repeats} repeats; process CPU seconds except `distill: training` (the "
          f"run's wall_s){'; before = ' + args.before if args.before else ''}")
    print(pd.DataFrame(rows).sort_values(["measure", "code"]).to_string(index=False))


if __name__ == "__main__":
    main()
