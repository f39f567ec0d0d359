"""The report's summary as text: the display strings of its cells, and Markdown and LaTeX tables
(report.md, report.tex)."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from dfkd_cli.report.summary import KEYS, REAL_REFERENCE, REFERENCE_COLUMNS


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def key_text(value) -> str:
    """A cell key as text: a whole number as an integer (epochs=200, not 200.0000), another
    number in its shortest form (1e-05), text as it is."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def _p(value) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def display(table: pd.DataFrame, pm: str = "±") -> pd.DataFrame:
    """The summary as strings, as read in the Markdown and LaTeX tables."""
    out = pd.DataFrame()
    for key in KEYS + split_columns(table):
        out[key] = table[key].map(key_text)
    out["n"] = table["n"].map(str)
    out["failed"] = table["n_failed"].map(lambda v: str(int(v)) if v else "")
    out["RMSE mean"] = [f"{_num(m)} {pm} {_num(s)}" if n > 1 else _num(m)
                        for m, s, n in zip(table["rmse_mean"], table["rmse_sd"], table["n"])]
    out["teacher"] = table["teacher_rmse_mean"].map(_num)
    out["ratio"] = table["ratio_mean"].map(lambda v: _num(v, 3))
    out["wins vs baseline"] = _wins(table, "baseline", "")
    out["real-data reference"] = table["reference_rmse_mean"].map(_num)
    out["ratio to reference"] = table["ratio_to_reference"].map(lambda v: _num(v, 3))
    out["wins vs reference"] = _wins(table, "reference_arm", "reference_")
    if "paper_mean" in table.columns:
        out["paper"] = [f"{_num(m)} {pm} {_num(s)}" if pd.notna(m) else ""
                        for m, s in zip(table["paper_mean"], table["paper_sd"])]
        out["diff"] = table["paper_diff"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}")
        out["within 2 sd"] = table["within_2sd"].map(
            lambda v: "" if v is None or pd.isna(v) else ("yes" if v else "no"))
    return out


def _wins(table: pd.DataFrame, against: str, prefix: str) -> list[str]:
    """'wins/pairs (p=..., test)' per cell for the comparison whose columns start `prefix`."""
    out = []
    for _, r in table.iterrows():
        if pd.isna(r[f"{prefix}n_pairs"]) or pd.isna(r[against]):
            out.append("")
        else:
            out.append(f"{int(r[prefix + 'wins'])}/{int(r[prefix + 'n_pairs'])} "
                       f"(p={_p(r[prefix + 'p_value'])}, {r[prefix + 'test']})")
    return out


def split_columns(table: pd.DataFrame) -> list[str]:
    """The cell keys beyond KEYS: `--by` columns, varying priors / domains, swept keys."""
    known = {"n", "n_failed", "rmse_mean", "rmse_sd", "teacher_rmse_mean", "ratio_mean",
             "baseline", "n_pairs", "wins", "losses", "p_value", "test", "seeds", "paper_mean",
             "paper_sd", "paper_n", "paper_teacher", "paper_diff", "within_2sd",
             *REFERENCE_COLUMNS}
    return [c for c in table.columns if c not in known and c not in KEYS]


def text_cell(value) -> str:
    """A cell as text: empty for a missing value (NaN, None, pd.NA), else str(value)."""
    return "" if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) \
        else str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    cells = frame.map(lambda v: text_cell(v).replace("|", "\\|").replace("\n", " "))
    lines = ["| " + " | ".join(frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
        "±": r"$\pm$"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "% no distillation runs\n"
    head = " & ".join(_tex(str(c)) for c in frame.columns) + r" \\"
    body = [" & ".join(_tex(text_cell(v)) for v in row) + r" \\"
            for row in frame.itertuples(index=False)]
    return "\n".join([r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule", head,
                      r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]) + "\n"


def render_markdown(table: pd.DataFrame, fails: pd.DataFrame, notes: list[str],
                    baseline: str, n_runs: int, sources: Sequence[str],
                    reference_arm: str = REAL_REFERENCE) -> str:
    parts = [f"# dfkd report\n\nRuns gathered: {n_runs} from {', '.join(map(str, sources))}. "
             "student_rmse on the real test rows (standardised target); mean ± sd (ddof 1) over "
             f"seeds; ratio = mean of student/teacher RMSE; wins = seeds where the arm's RMSE is "
             f"below the baseline arm `{baseline}`'s on the same seed (two-sided paired test). "
             f"real-data reference = the mean RMSE of arm `{reference_arm}` (the same student on "
             "the training rows) over the seeds paired with the cell; ratio to reference = mean "
             "of the arm's RMSE over the reference's, seed by seed.\n"]
    if "paper_mean" in table.columns:
        parts.append("paper = the published per-seed values' mean ± sd (the paper selected by "
                     "validation, as selection=val); diff = ours - paper.\n")
    parts.append("## Summary\n\n" + markdown_table(display(table)))
    parts.append(f"\n## Failed or incomplete runs ({len(fails)})\n\n" + markdown_table(fails))
    if notes:
        parts.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes))
    return "\n".join(parts)
