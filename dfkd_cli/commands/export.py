"""`dfkd export PATH`: a dfkd checkpoint -> TorchScript and ONNX models of raw features -> raw
targets, checked against the checkpoint, plus a model card.

An export needs no preprocessing: it is the checkpoint's network with its scalers folded in
(`raw_units.raw_model`). Each export is compared with the checkpoint's network applied with
explicit scaling on random raw inputs x_mean + x_std * N(0, 1); a difference above `--tolerance`
(relative to y_std) exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import numbers
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from dfkd_cli import __version__
from dfkd_cli.errors import UserError, one_line_errors
from dfkd_cli.nets import architecture
from dfkd_cli.teachers.model_files import ONNX_EXTRA, load_model_file
from dfkd_cli.teachers.raw_units import (
    CHECKPOINT,
    TARGET_KEY,
    feature_names,
    load,
    network,
    raw_model,
    scaled_predict,
    scaler,
    target_names,
)
from dfkd_cli.tracking import trackers
from dfkd_cli.utils.files import atomic_path

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}  # after the checkpoint's stem
OPSET = 17
PROVENANCE = ("teacher_path", "dataset", "strategy", "arm", "alpha", "selection", "seed")
CHECK_SEED = 0


# ---------------------------------------------------------------------------------------------
# writing and checking the exports


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def write_torchscript(model: nn.Module, input_dim: int, path: Path) -> None:
    """Scripted when TorchScript compiles the network, else traced on two rows."""
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        try:
            compiled = torch.jit.script(model)
        except Exception:  # noqa: BLE001 - TorchScript rejects much of Python: trace instead
            compiled = torch.jit.trace(model, (torch.zeros(2, input_dim),))
        torch.jit.save(compiled, str(tmp))


def write_onnx(model: nn.Module, input_dim: int, path: Path) -> None:
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(2, input_dim),), str(tmp), dynamo=False,
                          opset_version=OPSET, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


@dataclass
class Check:
    """One export and its largest difference from the explicit-scaling student."""

    format: str
    path: Path
    max_abs: float
    max_rel: float  # per output divided by y_std, the largest


def check(fmt: str, path: Path, payload: dict, samples: int, net_target: str | None = None
          ) -> Check:
    """Run the export on `samples` seeded raw inputs x_mean + x_std * N(0, 1) and compare."""
    x_mean, x_std, _, y_std = scaler(payload)
    noise = torch.randn(samples, len(x_mean), generator=torch.Generator().manual_seed(CHECK_SEED))
    x = x_mean + x_std * noise
    with torch.no_grad():
        exported = load_model_file(path, (fmt,)).module(x)
    diff = (exported.double() - scaled_predict(payload, x, net_target)).abs().amax(dim=0)
    return Check(fmt, path, float(diff.max()), float((diff / y_std.double()).max()))


def requested_formats(formats: Sequence[str] | None) -> tuple[list[str], str | None]:
    """The formats to write and a note on any skipped: ONNX is skipped (with a note) when not
    installed and not asked for, and an error when asked for."""
    if formats:
        if "onnx" in formats and not onnx_available():
            raise UserError("--formats onnx needs the onnx and onnxruntime packages: "
                            + ONNX_EXTRA)
        return list(dict.fromkeys(formats)), None
    if onnx_available():
        return list(FORMATS), None
    return ["torchscript"], f"onnx skipped: onnx / onnxruntime are not installed ({ONNX_EXTRA})"


# ---------------------------------------------------------------------------------------------
# the model card


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _section(title: str, header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    """A Markdown section holding one table."""
    return [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


LOADING = {
    "torchscript": """```python
import torch
model = torch.jit.load("{file}")
y = model(torch.as_tensor(x, dtype=torch.float32))  # x: (n, inputs) raw features
```""",
    "onnx": """```python
import onnxruntime
session = onnxruntime.InferenceSession("{file}")
y = session.run(["y"], {{"x": x.astype("float32")}})[0]  # x: (n, inputs) raw features
```""",
}


def model_card(source: Path, payload: dict, checks: list[Check]) -> str:
    """A short Markdown description: the model, its inputs and outputs, where it came from,
    its metrics, the export files with their checks, how to load them and the run config."""
    arch, metrics = payload["arch"], payload.get("metrics") or {}
    x_mean, x_std, _, _ = scaler(payload)
    d, k = arch["input_dim"], arch.get("output_dim", 1)
    features = feature_names(payload) or [f"column {i + 1}" for i in range(d)]
    targets = target_names(payload) or (["y"] if k == 1 else [f"y{i + 1}" for i in range(k)])
    role = "teacher" if metrics.get("command") == "train-teacher" else "student"
    if architecture.kind(arch) == "mlp":
        widths = " -> ".join(str(w) for w in [d, *arch["hidden"], k])
        described = [("architecture", widths), ("activation", arch["activation"])]
        intro = (f"A dfkd {role}: a multilayer perceptron ({widths}, {arch['activation']}). "
                 "The exports take the raw features, in the order below, and give the raw "
                 "targets: the scalers are folded into the first and last layers.")
    else:
        name = arch.get("target", arch["name"])
        described = [("architecture", architecture.arch_name(arch)), ("network", name),
                     ("keyword arguments", arch.get("kwargs", {}))]
        intro = (f"A dfkd {role}: the network {name} ({architecture.arch_name(arch)}). The exports "
                 "take the raw features, in the order below, and give the raw targets: the "
                 "scalers are explicit layers before and after the network.")
    lines = [f"# Model card: {source.name}", "", intro, ""]
    lines += _section("Model", ["", ""], [
        *described, ("inputs", d),
        ("outputs", f"{k}: {', '.join(targets)}"), ("checkpoint", source),
        ("exported by", f"dfkd {__version__}")])
    lines += _section("Inputs", ["feature", "mean", "sd"], [
        (name, f"{m:.6g}", f"{sd:.6g}")
        for name, m, sd in zip(features, x_mean.tolist(), x_std.tolist())])
    lines += _section("Provenance", ["", ""], [
        (key, value) for key in PROVENANCE
        if (value := metrics.get(key, payload.get(key))) is not None])
    lines += _section("Metrics", ["metric", "value"], [
        (key, f"{value:.6g}") for key, value in metrics.items() if _number(value)])
    lines += _section("Exports", ["file", "format", "max abs diff", "relative to y_std"], [
        (c.path.name, c.format, f"{c.max_abs:.3g}", f"{c.max_rel:.3g}") for c in checks])
    lines += [("Each export was compared with the checkpoint's network applied with explicit "
               "scaling on random raw inputs (x_mean + x_std * N(0, 1))."), "", "## Loading", ""]
    for c in checks:
        lines += [LOADING[c.format].format(file=c.path.name), ""]
    if payload.get("config"):
        lines += ["## Run config", "", "```yaml", payload["config"].rstrip(), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# entry points


def export(path: str | Path, out: str | Path | None = None,
           formats: Sequence[str] | None = None, samples: int = 1000,
           net_target: str | None = None) -> tuple[list[Check], Path, str | None]:
    """Write the exports and model_card.md into `out` (default: <checkpoint folder>/export);
    returns the checks, the card's path and a note on skipped formats."""
    if samples < 1:
        raise UserError(f"--samples must be at least 1, not {samples}")
    formats, note = requested_formats(formats)
    source, payload = load(path)
    network(payload, net_target, f"checkpoint {source}")  # a custom network: named? else fail
    out = Path(out) if out is not None else source.parent / "export"
    model = raw_model(payload, net_target)
    input_dim = payload["arch"]["input_dim"]
    checks = []
    for fmt in formats:
        target = out / (source.stem + SUFFIXES[fmt])
        if fmt == "torchscript":
            write_torchscript(model, input_dim, target)
        else:
            write_onnx(model, input_dim, target)
        checks.append(check(fmt, target, payload, samples, net_target))
    card = out / "model_card.md"
    with atomic_path(card) as tmp:
        tmp.write_text(model_card(source, payload, checks))
    return checks, card, note


@one_line_errors("dfkd export")
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfkd export",
        description="Export a dfkd checkpoint as TorchScript and ONNX models that map raw "
                    "features to raw targets (scalers folded in), check each against the "
                    "checkpoint, and write a model card.")
    parser.add_argument("path", metavar="PATH",
                        help=f"a dfkd checkpoint, or a run directory holding {CHECKPOINT}")
    parser.add_argument("--out", metavar="DIR",
                        help="where the files go (default: the checkpoint's folder/export)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, metavar="FORMAT",
                        help="torchscript and/or onnx (default: both; onnx when installed)")
    parser.add_argument("--samples", type=int, default=1000,
                        help="random raw inputs the exports are checked on (default: 1000)")
    parser.add_argument(TARGET_KEY, metavar="CLASS",
                        help="the class of a custom network the checkpoint holds (its "
                             "_target_): dfkd imports a checkpoint's code only when named")
    parser.add_argument("--mlflow", metavar="TRACKING_URI",
                        help="also log the exports to the MLflow run this run logged to (its "
                             "mlflow_run.json), in the store at TRACKING_URI (e.g. "
                             "sqlite:///outputs/mlflow/mlflow.db); without it nothing is sent "
                             "or copied anywhere")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference allowed, relative to the target's sd "
                             "(default: 1e-4)")
    args = parser.parse_args(argv)
    checks, card, note = export(args.path, args.out, args.formats, args.samples,
                                args.net_target)
    if note:
        print(note)
    for c in checks:
        print(f"{c.format:<12} {c.path}  max |diff| {c.max_abs:.3g} "
              f"({c.max_rel:.3g} of y_std)")
    print(f"wrote {card}")
    if args.mlflow:  # only when asked, to the store named here (never one a file names)
        source = Path(args.path)
        trackers.log_export(source if source.is_dir() else source.parent,
                            [c.path for c in checks] + [card], args.mlflow)
    failed = [c for c in checks if not c.max_rel <= args.tolerance]
    for c in failed:
        print(f"dfkd export: error: {c.path} differs from the checkpoint by {c.max_rel:.3g} of "
              f"y_std, more than --tolerance {args.tolerance:g}", file=sys.stderr)
    return 1 if failed else 0
