"""`make mutate`'s table: per module, what mutmut's last run did with its mutants, then every
mutant that survived (the ones docs/testing.md must explain, or a test must kill).

Reads `mutmut results --all true` (lines `    <module>.<function>__mutmut_<n>: <status>`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

MUTMUT = Path(sys.executable).with_name("mutmut")
LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+)$")
STATUSES = ["killed", "timeout", "survived", "no tests", "not checked", "suspicious", "skipped"]


def module_of(name: str) -> str:
    """dfkd_cli.loop.student_loop.xǁStudentLoopǁfinish__mutmut_3 -> dfkd_cli.loop.student_loop"""
    return re.split(r"\.x(?:ǁ|_)", name, maxsplit=1)[0]


def main() -> int:
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for line in out.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        name, status = match["name"], match["status"].strip()
        counts[module_of(name)][status] += 1
        if status == "survived":
            survivors.append(name)
    header = ["module", "mutants", *STATUSES]
    rows = [[module, str(sum(c.values())), *(str(c[s]) for s in STATUSES)]
            for module, c in sorted(counts.items())]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print(f"\nsurvived ({len(survivors)}; `mutmut show <name>` prints the change):")
    for name in survivors:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
