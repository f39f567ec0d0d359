"""The report's files: gather the runs below some directories, summarise them and write
report.csv / report.md / report.tex and runs.csv (`dfkd report`, and the end-of-sweep callback)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dfkd_cli.errors import UserError
from dfkd_cli.report.gather import gather
from dfkd_cli.report.plots import plot
from dfkd_cli.report.summary import (
    BASELINE,
    REAL_REFERENCE,
    failures,
    read_reference,
    resolve_baseline,
    summarize,
)
from dfkd_cli.report.text import display, latex_table, render_markdown
from dfkd_cli.utils.files import atomic_path, write_csv

OUTPUTS = ("report.csv", "report.md", "report.tex", "runs.csv")


def write_report(paths: Sequence[str | Path], out: str | Path | None = None,
                 baseline: str = BASELINE, reference: str | Path | None = None,
                 by: Sequence[str] = (), plots: bool = False,
                 reference_arm: str = REAL_REFERENCE) -> dict:
    """Gather, summarise and write report.csv / .md / .tex and runs.csv into `out` (default: the
    first path). Returns the pieces (runs, table, failures, notes, markdown, written paths)."""
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file, not a folder: the report writes "
                        f"{', '.join(OUTPUTS)} into a folder; give a folder (new or existing)")
    ref = read_reference(reference) if reference else None  # a bad file fails before any work
    runs = gather(paths)
    table, notes = summarize(runs, baseline, by, ref, reference_arm)
    baseline = resolve_baseline(runs, baseline)[0]  # the label it stands for (a note says so)
    fails = failures(runs)
    out = Path(out) if out is not None else Path(paths[0])
    if out.is_file():
        out = out.parent
    out.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(table, fails, notes, baseline, len(runs), paths, reference_arm)
    write_csv(table, out / "report.csv")
    write_csv(runs.drop(columns=["mtime"], errors="ignore").convert_dtypes(), out / "runs.csv")
    for name, text in (("report.md", markdown), ("report.tex", latex_table(display(table)))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    written = [out / name for name in OUTPUTS]
    if plots:
        written += plot(runs, table, out)
    return {"runs": runs, "table": table, "failures": fails, "notes": notes,
            "markdown": markdown, "written": written}
