"""Distillation speed and memory: `make bench` (or `python benchmarks/bench.py --help`).

Runs each configuration as a whole `dfkd distill` process several times and prints one table:
median training wall seconds (the run's own wall_s), median process wall seconds, student steps
per second, peak RSS, and the ratio to the single run measured in the same invocation. The
paper's protocol throughout: E = 2000 epochs x n_s = 10 steps, batch 50 (100 for the alpha = 1
and random-sampling arms), student of 50 tanh units. The same MLP also runs on the autograd path
(fast_path=off, teacher and student), beside the fast path, and the built-in rbf, resmlp and cnn
students on the autograd path (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

DFKD = shutil.which("dfkd") or str(Path(sys.executable).with_name("dfkd"))


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run one dfkd process; return (process wall seconds, peak RSS in MiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen([DFKD, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dfkd {' '.join(args)} failed:\n{proc.stderr.read()}")
    return wall, usage.ru_maxrss / 1024


def seeds_override(k: int) -> str:
    """The override for a population of seeds 1..k."""
    return f"seeds=[{','.join(map(str, range(1, k + 1)))}]"


def configurations(members: list[int], allocator_ab: bool) -> list[tuple[str, list[str], int]]:
    """(name, overrides, population size); the first is the single-run reference. Each
    population also runs on both cores (threads=2), and with `allocator_ab` the largest one also
    without runtime.keep_freed_memory."""
    rows = [("bounded, selection=last (reference)", ["arm=bounded", "selection=last"], 1),
            ("bounded, selection=val", ["arm=bounded", "selection=val"], 1),
            ("bounded alpha=1, selection=last", ["arm=bounded_alpha1", "selection=last"], 1),
            ("random sampling, selection=last", ["arm=random_sampling", "selection=last"], 1),
            ("generator, selection=last", ["arm=generator", "selection=last"], 1),
            ("generator alpha=1, selection=last", ["arm=generator_alpha1", "selection=last"], 1),
            ("bounded, fast_path=off (the same MLP on the autograd path)",
             ["arm=bounded", "selection=last", "fast_path=off"], 1),
            ("random sampling, fast_path=off",
             ["arm=random_sampling", "selection=last", "fast_path=off"], 1)]
    rows += [(f"bounded, student={name}", ["arm=bounded", "selection=last", f"student={name}"], 1)
             for name in ("rbf", "resmlp", "cnn")]
    for k in members:
        seeds = seeds_override(k)
        rows.append((f"bounded, population of {k}, selection=last",
                     ["arm=bounded", "selection=last", seeds], k))
        rows.append((f"bounded, population of {k}, selection=last, threads=2",
                     ["arm=bounded", "selection=last", seeds, "threads=2"], k))
    if allocator_ab and members:
        k = max(members)
        rows.append((f"bounded, population of {k}, selection=last, keep_freed_memory=false",
                     ["arm=bounded", "selection=last", seeds_override(k),
                      "keep_freed_memory=false"], k))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cpusmall")
    parser.add_argument("--data-dir",
                        default=os.environ.get("DFKD_DATA_DIR", "data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2000,
                        help="student epochs per run (the paper's 2000; fewer for a quick look)")
    parser.add_argument("--population", type=int, nargs="*", default=[10],
                        help="population sizes to time (seeds 1..K)")
    parser.add_argument("--allocator-ab", action="store_true",
                        help="also time the largest population with keep_freed_memory=false")
    parser.add_argument("--only", nargs="*", default=None,
                        help="names (substrings) of the configurations to run")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dfkd-bench-"))
    env = {**os.environ, "DFKD_DATA_DIR": str(Path(args.data_dir).resolve()),
           "DFKD_TEACHER_STORE": str(work / "teachers")}
    common = [f"dataset={args.dataset}", f"device={args.device}", "progress=false"]
    distill_common = [*common, f"epochs={args.epochs}"]
    k = max([1, *args.population])
    # The teachers (the paper's settings, early stopping), timed too: one alone, then the
    # population of seeds 1..K that the distillation runs below use.
    one, _ = run(["train-teacher", *common, "seed=1", f"teacher_store={work}/single",
                  f"hydra.run.dir={work}/teacher1"], work, env)
    population = seeds_override(k)
    many, many_rss = run(["train-teacher", *common, population, f"hydra.run.dir={work}/teachers"],
                         work, env)
    rows = [{"configuration": "teacher, 1 seed", "median_process_s": one},
            {"configuration": f"teachers, population of {k} seeds", "median_process_s": many,
             "peak_rss_mib": many_rss}]
    chosen = [c for i, c in enumerate(configurations(args.population, args.allocator_ab))
              if i == 0 or not args.only or any(s in c[0] for s in args.only)]
    # round robin: repeat r of every configuration before repeat r + 1 of any, so that a
    # machine whose load changes weighs on every configuration alike
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in chosen}
    for r in range(args.repeats):
        for i, (name, overrides, _) in enumerate(chosen):
            out = work / f"run{i}-{r}"
            wall, peak = run(["distill", *distill_common, *overrides, f"hydra.run.dir={out}"],
                             work, env)
            metrics = pd.concat(pd.read_csv(p) for p in out.rglob("metrics.csv"))
            runs[name].append((float(metrics.wall_s.iloc[0]), wall, peak))
            print(f"{name} ({r + 1}/{args.repeats}): {runs[name][-1][0]:.2f} s",
                  file=sys.stderr, flush=True)
    reference = None
    for name, _, members in chosen:
        walls, process, rss = (list(column) for column in zip(*runs[name]))
        steps = args.epochs * 10 * members
        row = {"configuration": name, "median_wall_s": statistics.median(walls),
               "min_wall_s": min(walls), "max_wall_s": max(walls),
               "median_process_s": statistics.median(process),
               "student_steps_per_s": steps / statistics.median(walls),
               "peak_rss_mib": max(rss)}
        reference = reference or row["median_wall_s"]
        row["ratio_to_single"] = row["median_wall_s"] / reference
        rows.append(row)
    table = pd.DataFrame(rows)
    print(f"\ndataset={args.dataset} device={args.device} repeats={args.repeats} "
          f"epochs={args.epochs} "
          f"(threads=1 unless named; student steps/s counts every member's steps)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.out:
        table.to_csv(args.out, index=False)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
