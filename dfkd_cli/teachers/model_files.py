"""Models from elsewhere: TorchScript, torch.export (.pt2) and ONNX files as (n, d) -> (n, k) modules.

These are the formats a user brings a teacher in, and the formats `dfkd export` writes. A
TorchScript or torch.export file runs TorchScript / ATen operations, and autograd goes through it,
so the gradient-based strategies can use it. An ONNX file runs in onnxruntime (the optional `onnx`
extra) on the CPU and cannot be differentiated.

Loading a torch.export archive can run code from the file: torch.export.load unpickles any
weight its weights config marks `use_pickle` (torch.load without weights_only). So a file is
told apart by content *before* loading, and each caller names the kinds it accepts: a
torch.export archive loads only where the user asked for one (`teacher=torchscript`, `dfkd
evaluate --allow-torch-export`).
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dfkd_cli.errors import UserError, reason
from dfkd_cli.nets import mlp

ONNX_EXTRA = "pip install 'dfkd-cli[onnx]'"


@dataclass
class ModelFile:
    module: nn.Module  # (n, d) float32 -> (n, k)
    input_dim: int | None  # None when the file does not say
    output_dim: int | None
    differentiable: bool
    kind: str  # torchscript | torch.export | onnx


class Columns(nn.Module):
    """Makes a model's output (n, k) even when the file returns a vector (n,)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mlp.columns(self.net(x))


class OnnxModule(nn.Module):
    """An onnxruntime session as a module: float32 rows in, float32 rows out, on x's device.
    Forward only: onnxruntime has no gradients. The session runs the file at `path`, or `model`
    (a serialised ONNX model; `path` then only names it in messages)."""

    def __init__(self, path: Path, model: bytes | None = None):
        super().__init__()
        try:
            import onnxruntime
        except ImportError as exc:
            raise UserError(f"ONNX models need onnxruntime: {ONNX_EXTRA}") from exc
        options = onnxruntime.SessionOptions()
        # as many threads as torch's (dfkd's `threads`, 1 by default): on rows of a few samples
        # a pool of one thread per core costs up to 10x the work in hand-offs
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(str(path) if model is None else model,
                                                        options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"{path} could not be loaded as an ONNX model: {exc}") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise UserError(f"ONNX model {path} has {len(inputs)} inputs; dfkd needs one "
                            "(rows of features)")
        self.input_name = inputs[0].name
        self.input_dim = _static_dim(inputs[0].shape)
        self.output_dim = _static_dim(outputs[0].shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().to("cpu", torch.float32).numpy()
        y = torch.from_numpy(self.session.run(None, {self.input_name: rows})[0]).to(x.device)
        return y.float()


def _static_dim(shape) -> int | None:
    """The last dimension of an ONNX shape when it is a fixed number (not for a vector)."""
    return shape[-1] if len(shape) >= 2 and isinstance(shape[-1], int) else None


def _is_torch_export(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("models/model.json") for name in archive.namelist())


KINDS = ("torchscript", "torch.export", "onnx")
SAFE_KINDS = ("torchscript", "onnx")  # loading them runs no Python from the file


def file_kind(path: Path) -> str:
    """torchscript, torch.export or onnx, by content (zip archives are TorchScript or
    torch.export; anything else is taken for ONNX), without loading the model."""
    if not zipfile.is_zipfile(path):
        return "onnx"
    try:
        return "torch.export" if _is_torch_export(path) else "torchscript"
    except zipfile.BadZipFile:
        return "torchscript"  # a damaged archive: torch.jit.load reports it


def load_model_file(path: str | Path, kinds: tuple[str, ...] = SAFE_KINDS,
                    allow_hint: str = "") -> ModelFile:
    """A TorchScript, torch.export or ONNX file (told apart by content, not by name), if its
    kind is one of `kinds`; `allow_hint` says how the user allows a refused kind."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found")
    kind = file_kind(path)
    if kind not in kinds:
        why = (" (loading one can run code stored in the file: torch.export unpickles its "
               "weights; load only files you trust)" if kind == "torch.export" else "")
        hint = f"; {allow_hint}" if allow_hint else ""
        raise UserError(f"{path} is a {kind} file{why}; accepted here: {', '.join(kinds)}{hint}")
    if kind == "onnx":
        try:
            session = OnnxModule(path)
        except UserError as exc:
            if path.suffix.lower() == ".onnx":
                raise
            raise UserError(f"{path} is not a TorchScript, torch.export or ONNX file") from exc
        return ModelFile(Columns(session), session.input_dim, session.output_dim, False, "onnx")
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated but still the loader
            warnings.simplefilter("ignore", DeprecationWarning)
            if kind == "torch.export":
                module = torch.export.load(str(path)).module()
            else:
                module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and others for foreign archives
        raise UserError(f"{path} is neither a TorchScript nor a torch.export file (a dfkd "
                        f"checkpoint is loaded by teacher=mlp500 teacher.path=...): "
                        f"{reason(exc)}") from exc
    return ModelFile(Columns(module), None, None, True, kind)
