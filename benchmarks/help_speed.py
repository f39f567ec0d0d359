"""Wall time and peak memory of `dfkd distill --help`, this tree beside another revision's.

Each run is a fresh Python process under /usr/bin/time -v that imports dfkd_cli from the tree
given and calls the command line's main(["distill", "--help"]); the table gives the median of
--repeats runs per tree (docs/performance.md, "`dfkd distill --help`").

    python benchmarks/help_speed.py --before faec8b2 --repeats 7
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = ("import sys; sys.path.insert(0, {tree!r}); import dfkd_cli; "
        "assert dfkd_cli.__file__.startswith({tree!r}), dfkd_cli.__file__; "
        "from dfkd_cli.cli import main; main(['distill', '--help'])")


def tree_of(revision: str, folder: Path) -> Path:
    """A revision's files in `folder`, its configs where the installed package has them."""
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "dfkd_cli" / "configs").symlink_to(folder / "configs")
    return folder


def measure(tree: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one run."""
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c",
                           CODE.format(tree=str(tree))], capture_output=True, text=True)
    if "Exit status: 0" not in proc.stderr:
        raise SystemExit(f"{tree}: the command failed\n{proc.stderr[-2000:]}")
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    parts = [float(p) for p in clock.group(1).split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return wall, int(rss.group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="faec8b2", help="the revision to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trees = {f"{args.before} (before)": tree_of(args.before, Path(scratch)),
                 "this tree": REPO}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for _ in range(args.repeats):  # interleaved: both see the same load
            for name, tree in trees.items():
                runs[name].append(measure(tree))
    print("| code | wall s, median (min-max) | peak RSS MiB, median |")
    print("|---|---|---|")
    for name, values in runs.items():
        walls = [w for w, _ in values]
        print(f"| {name} | {statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f}) "
              f"| {statistics.median(r for _, r in values):.0f} |")


if __name__ == "__main__":
    main()
