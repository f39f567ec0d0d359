"""`dfkd probe`'s figures (Zhou & Chiam 2023, the MNIST experiment): a grid of synthetic inputs
from each strategy drawn as images, and the histogram of the teacher's predictions on each
strategy's synthetic batches (raw target units). Needs matplotlib (the `plots` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfkd_cli.errors import UserError

IMAGES, PREDICTIONS = "probe_images.png", "probe_predictions.png"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("the probe's figures need matplotlib: pip install 'dfkd-cli[plots]' "
                        "(or figures=false)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_grid(samples: dict[str, np.ndarray], shape: list[int], value_range: tuple[float, float],
               path: Path) -> Path:
    """One row per label: its samples (n, d) in raw units reshaped to `shape` ((C, H, W) or
    (H, W); the first channel is drawn), grey scale over `value_range`."""
    plt = _pyplot()
    columns = max(len(v) for v in samples.values())
    fig, axes = plt.subplots(len(samples), columns, figsize=(1.1 * columns, 1.2 * len(samples)),
                             squeeze=False)
    for row, (label, x) in zip(axes, samples.items()):
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(x):
                image = x[j].reshape(shape)
                ax.imshow(image[0] if image.ndim == 3 else image, cmap="gray",
                          vmin=value_range[0], vmax=value_range[1])
            else:
                ax.axis("off")
        row[0].set_ylabel(label, rotation=0, ha="right", va="center")
    return _save(plt, fig, path)


def prediction_histograms(predictions: dict[str, np.ndarray], target: str, path: Path,
                          reference: str | None = None) -> Path:
    """One panel per label: the histogram of the teacher's predictions (raw units) on its
    samples, on a shared axis: the `reference` label's range (the real test rows) widened by
    half its width on each side, values beyond it piled into the edge bins (an unbounded
    strategy's far-out predictions would otherwise squeeze every other panel into one bin)."""
    plt = _pyplot()
    values = predictions.get(reference, np.concatenate(list(predictions.values())))
    low, high = np.nanpercentile(values, [0.5, 99.5]) if len(values) else (0.0, 1.0)
    if reference in predictions:
        low, high = low - (high - low) / 2, high + (high - low) / 2
    bins = np.linspace(low, high if high > low else low + 1, 41)
    fig, axes = plt.subplots(len(predictions), 1, figsize=(6, 1.3 * len(predictions)),
                             sharex=True, squeeze=False)
    for ax, (label, pred) in zip(axes[:, 0], predictions.items()):
        ax.hist(np.clip(pred, bins[0], bins[-1]), bins=bins, color="tab:blue")
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_yticks([])
    axes[-1, 0].set_xlabel(f"teacher's prediction ({target})")
    return _save(plt, fig, path)
