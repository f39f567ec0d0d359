"""A population's own ONNX teachers (one file per member) as one onnxruntime session.

With scikit-learn store teachers each member of a population has its own ONNX file, the teacher
of its seed. Run one after the other, K sessions cost K onnxruntime calls (and K sets of
conversions) per teacher evaluation, and a gradient-free strategy evaluates the teacher many
times per student step (the protein case study's DE arm: 26 times). `merge` puts the K graphs
side by side in one model instead: its input is x (K, n, d), member k's graph runs on x[k] (a
Gather) with its own weights and operators, unchanged, and the members' outputs are stacked
row-wise into (K * n, k). One call then evaluates the whole population, and member k computes
what its own file computes on its rows.

Models that cannot be put side by side (operator sets of different versions, several inputs,
local functions) are left to one session each (teacher.PerMember), as is every member under
`fast_path=off`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dfkd_cli.data.datasets import Scaler
from dfkd_cli.teachers.model_files import OnnxModule

INPUT, OUTPUT = "x", "y"


def _single_input(graph) -> str | None:
    """The name of the graph's one data input (initializers listed as inputs aside), or None."""
    weights = {init.name for init in graph.initializer}
    names = [i.name for i in graph.input if i.name not in weights]
    return names[0] if len(names) == 1 else None


def merge(paths: list[Path]):
    """One ONNX model running the models in `paths` side by side on x (K, n, d) -> y (K * n, k);
    None when they cannot share a model."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    models = [onnx.load(str(p)) for p in paths]
    opsets = [{o.domain: o.version for o in m.opset_import} for m in models]
    if (any(o != opsets[0] for o in opsets) or opsets[0].get("", 0) < 13
            or any(m.functions for m in models)
            or any(_single_input(m.graph) is None for m in models)):
        return None
    nodes, weights = [], []
    for k, model in enumerate(models):
        graph = compose.add_prefix(model, f"m{k}_").graph
        index, shape = f"member{k}", f"m{k}_rows"
        weights += [numpy_helper.from_array(torch.tensor(k).numpy(), index),
                    numpy_helper.from_array(torch.tensor([0, -1]).numpy(), shape),
                    *graph.initializer]
        nodes += [helper.make_node("Gather", [INPUT, index], [_single_input(graph)], axis=0),
                  *graph.node,
                  helper.make_node("Reshape", [graph.output[0].name, shape], [f"m{k}_out"])]
    nodes.append(helper.make_node("Concat", [f"m{k}_out" for k in range(len(models))],
                                  [OUTPUT], axis=0))
    graph = helper.make_graph(
        nodes, "population",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [len(models), None, None])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, None])], weights)
    return helper.make_model(graph, opset_imports=models[0].opset_import,
                             ir_version=max(m.ir_version for m in models))


class OnnxPopulation(nn.Module):
    """K raw-unit ONNX teachers, one per member, as (K, n, d) -> (K, n, k) in standardised units:
    T_k(z) = (net_k(mean_k + sd_k * z) - y_mean_k) / y_sd_k (teacher.RawUnitsTeacher's
    arithmetic, every member in one call of the merged model). Forward only."""

    def __init__(self, paths: list[Path], model, scalers: list[Scaler]):
        super().__init__()
        self.net = OnnxModule(paths[0], model.SerializeToString())
        for name in ("x_mean", "x_std", "y_mean", "y_std"):
            self.register_buffer(name, torch.stack([getattr(s, name) for s in scalers])[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, n, _ = x.shape
        raw = self.net(x * self.x_std + self.x_mean).reshape(members, n, -1)
        return (raw - self.y_mean) / self.y_std


def load(paths: list[Path], scalers: list[Scaler]) -> OnnxPopulation | None:
    """The members' ONNX files as one OnnxPopulation, or None when they cannot be merged."""
    model = merge(paths)
    return None if model is None else OnnxPopulation(paths, model, scalers)
