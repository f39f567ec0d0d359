"""The report as a reader sees it: swept integers as integers, failed jobs in the cell they
belong to (or listed apart, never a cell of their own), the baseline of a strategy= sweep found
by its strategy, and plot labels that do not overlap."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import QUICK_DISTILL, dfkd_here

SETTINGS = [o for o in QUICK_DISTILL if not o.startswith("epochs")]


@pytest.fixture(scope="module")
def sweep(workdir, tmp_path_factory) -> Path:
    """strategy=random,bounded x epochs=4,6 x seed=1,7: the workdir has no teacher for seed 7,
    so half the jobs fail."""
    path = tmp_path_factory.mktemp("labels") / "sweep"
    dfkd_here("distill", "-m", "strategy=random,bounded", "epochs=4,6", "seed=1,7", *SETTINGS,
              f"hydra.sweep.dir={path}", cwd=workdir, check=False)
    return path


def summary_rows(report: Path) -> list[list[str]]:
    text = report.read_text().split("## Summary")[1].split("## Failed")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return rows[:1] + rows[2:]


def test_integers_print_as_integers_and_failures_join_their_cells(sweep):
    rows = summary_rows(sweep / "report.md")
    header, body = rows[0], rows[1:]
    table = [dict(zip(header, row)) for row in body]
    assert sorted((r["arm"], r["epochs"]) for r in table) == [
        ("bounded_decreasing_m50", "4"), ("bounded_decreasing_m50", "6"),
        ("random_decreasing_m50", "4"), ("random_decreasing_m50", "6")]
    assert {r["n"] for r in table} == {"1"} and {r["failed"] for r in table} == {"1"}


def test_a_strategy_sweep_is_paired_against_its_random_arm(sweep, workdir):
    """Labels are <strategy>_<alpha>_m<batch size>: the default baseline (random_sampling) is
    the one arm of strategy random; --baseline takes a label or a strategy."""
    table = pd.read_csv(sweep / "report.csv")
    bounded = table[table.arm == "bounded_decreasing_m50"]
    assert set(bounded.baseline) == {"random_decreasing_m50"} and set(bounded.n_pairs) == {1}
    assert "the one arm of strategy=random" in (sweep / "report.md").read_text()
    for baseline in ("bounded", "bounded_decreasing_m50"):
        out = sweep.parent / f"by_{baseline}"
        dfkd_here("report", str(sweep), "--baseline", baseline, "--out", str(out), "-q",
                  cwd=workdir)
        other = pd.read_csv(out / "report.csv")
        assert set(other[other.arm == "random_decreasing_m50"].baseline) == \
            {"bounded_decreasing_m50"}


def test_cells_with_only_failures_are_listed_apart(workdir, tmp_path):
    dfkd_here("distill", "-m", "strategy=random,bounded", "seed=7", *QUICK_DISTILL,
              f"hydra.sweep.dir={tmp_path}", cwd=workdir, check=False)
    text = (tmp_path / "report.md").read_text()
    assert summary_rows(tmp_path / "report.md")[1:] == []
    assert "## Failed or incomplete runs (2)" in text
    assert "2 cells have no finished run, only failed or unfinished ones" in text


def test_plot_labels_do_not_overlap(sweep, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dfkd_cli.report import plots

    table = pd.read_csv(sweep / "report.csv")
    wide = pd.concat([table.assign(**{"epochs": table["epochs"] + 100 * k}) for k in range(15)],
                     ignore_index=True)  # sixty cells split by a swept key
    captured = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.append(fig) or path)
    plots.rmse_figures(wide, sweep.parent)
    fig = captured[0]
    fig.tight_layout()
    fig.canvas.draw()
    boxes = [label.get_window_extent() for label in fig.axes[0].get_xticklabels()]
    assert len(boxes) == 60 and "epochs=1406" in fig.axes[0].get_xticklabels()[-1].get_text()
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)
