"""The report's optional figures (matplotlib, the [plots] extra)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dfkd_cli.errors import UserError
from dfkd_cli.report.text import key_text, split_columns
from dfkd_cli.utils.run_tables import HISTORY


def plot(runs: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[Path]:
    """RMSE per arm with error bars (one figure per dataset, a panel per student) and learning
    curves from history.csv (one figure per dataset and student), in <out>/plots/."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plots needs matplotlib: pip install 'dfkd-cli[plots]' "
                        "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    return rmse_figures(table, folder) + curve_figures(runs, folder)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rmse_figures(table: pd.DataFrame, folder: Path) -> list[Path]:
    """rmse_<dataset>.png: each arm's mean RMSE +/- sd per selection, a panel per student."""
    import matplotlib.pyplot as plt

    written = []
    done = table[table["n"] > 0]
    split = split_columns(table)
    for dataset, by_dataset in done.groupby("dataset", sort=False):
        students = list(dict.fromkeys(by_dataset["student_hidden"]))
        labels = cell_labels(by_dataset, split)
        # room for every tick label: a panel widens with its cells, the figure deepens with
        # the longest label (written upwards)
        width = max(5.0, 0.35 * labels.nunique() + 2)
        depth = 0.075 * max(len(label) for label in labels)
        fig, axes = plt.subplots(1, len(students), figsize=(width * len(students), 3.5 + depth),
                                 squeeze=False)
        for ax, student in zip(axes[0], students):
            cells = by_dataset[by_dataset["student_hidden"] == student]
            cells = cells.assign(arm=labels[cells.index])
            arms = list(dict.fromkeys(cells["arm"]))
            selections = list(dict.fromkeys(cells["selection"]))
            for j, selection in enumerate(selections):
                sub = cells[cells["selection"] == selection].set_index("arm").reindex(arms)
                xs = [i + (j - (len(selections) - 1) / 2) * 0.2 for i in range(len(arms))]
                ax.errorbar(xs, sub["rmse_mean"], yerr=sub["rmse_sd"].fillna(0), fmt="o",
                            capsize=3, label=f"selection={selection}")
            teacher = cells["teacher_rmse_mean"].mean()
            ax.axhline(teacher, color="grey", linestyle=":", label="teacher")
            ax.set_xticks(range(len(arms)), arms, rotation=90, fontsize="small")
            ax.set_title(f"{dataset}, student {student}")
            ax.set_ylabel("test RMSE (standardised)")
            ax.legend(fontsize="small")
        written.append(_save(fig, folder / f"rmse_{dataset}.png"))
    return written


def cell_labels(cells: pd.DataFrame, split: list[str]) -> pd.Series:
    """An x label per cell, on one line: its arm, and the keys that split the arm's cells (a
    swept key), written as in the report's table (epochs=200, lr=1e-05)."""
    labels = cells["arm"].astype(str)
    if split:
        labels = labels + cells[split].apply(
            lambda row: "".join(f", {k}={key_text(v)}" for k, v in row.items() if pd.notna(v)),
            axis=1)
    return labels


def curve_figures(runs: pd.DataFrame, folder: Path) -> list[Path]:
    """curves_<dataset>_<student>.png: the loss and val_rmse per epoch, mean over seeds, a line
    per arm."""
    import matplotlib.pyplot as plt

    written = []
    ok = runs[(runs["status"] == "ok") & (runs.get("command") == "distill")]
    for (dataset, student), group in ok.groupby(["dataset", "student_hidden"], sort=False):
        curves = []
        for _, row in group.iterrows():
            path = Path(row["run_dir"]) / HISTORY
            if path.is_file():
                hist = pd.read_csv(path)
                hist["arm"], hist["selection"] = row["arm"], row["selection"]
                curves.append(hist)
        if not curves:
            continue
        hist = pd.concat(curves, ignore_index=True)
        panels = [c for c in ("loss", "val_rmse") if c in hist.columns]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for ax, column in zip(axes[0], panels):
            # selection only picks which weights are kept: the curves are per arm
            for arm, h in hist.groupby("arm", sort=False):
                mean = h.groupby("epoch")[column].mean()
                if mean.notna().any():
                    ax.plot(mean.index, mean.values, label=str(arm))
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{column} (mean over seeds)")
            ax.set_title(f"{dataset}, student {student}: {column}")
            ax.legend(fontsize="x-small")
        written.append(_save(fig, folder / f"curves_{dataset}_{student}.png"))
    return written
