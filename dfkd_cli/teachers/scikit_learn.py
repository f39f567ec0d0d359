"""scikit-learn teachers: fitted by `dfkd train-teacher`, stored as ONNX, run like any ONNX teacher.

The protein case study's teacher (Zhou & Chiam 2023) is scikit-learn's `SVR()` with its defaults.
`teacher=svr`, or `teacher=sklearn teacher.estimator._target_=<regressor class>`, fits the named
regressor on the training rows' raw features and raw targets, as the case study did (SVR's
default epsilon and gamma="scale" are meant for those units), converts it to ONNX and writes to
the teacher store

    <store>/<dataset>/<name>/seed<N>/teacher.onnx   raw features -> raw targets
                                     spec.yaml      the training rows' feature mean and sd, target
                                                    mean and sd, and input domain (min, max,
                                                    kinds, simplex groups; teacher_spec.py)
                                     metrics.csv    its training row: split sizes, test scores

and never a pickle. The pair is an ordinary foreign teacher (`teacher=onnx teacher.path=...
teacher.spec=...` gives the same one); distillation finds it by dataset, name and seed and runs it
in onnxruntime, which has no gradients. An RBF-kernel SVR becomes a graph of MatMul and Exp,
f(x) = sum_i a_i exp(-gamma ||x - sv_i||^2) + b, which onnxruntime runs about 30x faster on
small batches than skl2onnx's SVMRegressor operator; any other regressor goes through skl2onnx.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from dfkd_cli.data.datasets import Table, split_for
from dfkd_cli.data.domains import Domain
from dfkd_cli.errors import UserError, reason
from dfkd_cli.nets import metrics
from dfkd_cli.teachers import spec as teacher_spec
from dfkd_cli.teachers.model_files import load_model_file
from dfkd_cli.utils import run_tables as tables
from dfkd_cli.utils.files import atomic_path

log = logging.getLogger(__name__)

SKLEARN_EXTRA = "pip install 'dfkd-cli[sklearn]'"
MODEL, SPEC = "teacher.onnx", "spec.yaml"
OPSET = 17


def estimator_name(tcfg) -> str:
    """The store key of a scikit-learn teacher: its class, lower case, and any arguments, e.g.
    'svr' or 'randomforestregressor-n_estimators50'."""
    target = (tcfg.estimator or {}).get("_target_")
    if not target:
        raise UserError("teacher.format=sklearn needs teacher.estimator._target_=<a scikit-learn "
                        "regressor class, e.g. sklearn.svm.SVR>")
    args = [f"{k}{text}" for k, text, _ in estimator_args(tcfg)]
    return "-".join([str(target).rsplit(".", 1)[-1].lower(), *args])


def estimator_args(tcfg) -> list[tuple[str, str, Any]]:
    """(argument, its text in the store key, its value) for each argument of the estimator but
    its class; a list as 100x50 (as a network's sizes)."""
    out = []
    for k, v in sorted((tcfg.estimator or {}).items()):
        if k == "_target_":
            continue
        listed = OmegaConf.is_list(v) or isinstance(v, (list, tuple))
        out.append((str(k), "x".join(map(str, v)) if listed else str(v), v))
    return out


def build(tcfg) -> Any:
    """The regressor teacher.estimator names (Hydra's instantiate), unfitted."""
    try:
        from hydra.utils import instantiate
        from sklearn.base import BaseEstimator, is_regressor
    except ImportError as exc:
        raise UserError(f"scikit-learn teachers need scikit-learn and skl2onnx: {SKLEARN_EXTRA}"
                        ) from exc
    try:
        estimator = instantiate(tcfg.estimator)
    except Exception as exc:  # ImportError, TypeError for bad arguments, Hydra's own errors
        raise UserError(f"teacher.estimator={OmegaConf.to_container(tcfg.estimator)} could not "
                        f"be built: {reason(exc)}") from exc
    if not (isinstance(estimator, BaseEstimator) and is_regressor(estimator)):
        raise UserError(f"teacher.estimator._target_={tcfg.estimator._target_} is not a "
                        "scikit-learn regressor")
    return estimator


def rbf_svr_graph(svr, input_dim: int):
    """An RBF-kernel SVR as plain ONNX arithmetic: ||x||^2 - 2 x SV^T + ||sv||^2 -> exp(-gamma .)
    -> dual coefficients + intercept; (n, d) float32 -> (n, 1)."""
    from onnx import TensorProto, helper, numpy_helper

    sv = svr.support_vectors_.astype(np.float32)
    consts = {"sv_t": sv.T.copy(), "sv_sq": (sv.astype(np.float64) ** 2).sum(1)[None],
              "coef": svr.dual_coef_.T, "intercept": svr.intercept_, "minus_gamma": [-svr._gamma],
              "minus_two": [-2.0]}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis"))
    nodes = [("Mul", ["x", "x"], "x2"), ("ReduceSum", ["x2", "axis"], "x_sq"),
             ("MatMul", ["x", "sv_t"], "x_sv"), ("Mul", ["x_sv", "minus_two"], "cross"),
             ("Add", ["cross", "x_sq"], "partial"), ("Add", ["partial", "sv_sq"], "dist"),
             ("Mul", ["dist", "minus_gamma"], "scaled"), ("Exp", ["scaled"], "kernel"),
             ("MatMul", ["kernel", "coef"], "weighted"), ("Add", ["weighted", "intercept"], "y")]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, [out], **({"keepdims": 1} if op == "ReduceSum" else {}))
         for op, inputs, out in nodes], "rbf_svr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, input_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def to_onnx(estimator, x_train: np.ndarray):
    """The fitted regressor as an ONNX model of raw float32 rows."""
    from sklearn.svm import SVR

    if isinstance(estimator, SVR) and estimator.kernel == "rbf":
        return rbf_svr_graph(estimator, x_train.shape[1])
    from skl2onnx import to_onnx as convert

    try:
        return convert(estimator, x_train[:1].astype(np.float32), target_opset=OPSET)
    except Exception as exc:  # skl2onnx raises RuntimeError / its own types for unknown models
        raise UserError(f"skl2onnx cannot convert {type(estimator).__name__}: "
                        f"{reason(exc)}") from exc


def stored_row(path: Path) -> dict[str, Any]:
    """The training row kept beside a stored scikit-learn teacher."""
    return pd.read_csv(path.with_name(tables.METRICS)).iloc[0].to_dict()


def train(teacher, dataset, table: Table, seeds: list[int], paths: list[Path],
          dirs: list[Path], name: str, domain_of: Callable[[np.ndarray], Domain]
          ) -> list[pd.DataFrame]:
    """Fit the estimator the `teacher` config names on each seed's split of `table` (the
    `dataset` config's split settings), convert and store it, with the input domain
    `domain_of` finds in its raw training rows (bounds, kinds, simplex groups: spec.yaml's
    domain keys); score each on its test rows through the stored ONNX file (the model
    distillation will run)."""
    frames = []
    for seed, path, member_dir in zip(seeds, paths, dirs):
        part = split_for(dataset, table, seed)
        train_rows, _, test_rows = part.rows
        x_train, y_train = table.x[train_rows], table.y[train_rows]
        estimator = build(teacher)
        started = time.perf_counter()
        try:
            estimator.fit(x_train, y_train[:, 0] if y_train.shape[1] == 1 else y_train)
        except ValueError as exc:
            raise UserError(f"{name} could not be fitted on {part.name}: {exc}") from exc
        wall = time.perf_counter() - started
        model, scaler = to_onnx(estimator, x_train), part.scaler
        spec = {"features": list(part.features), "targets": list(part.targets),
                **{key: getattr(scaler, attr).tolist() for key, attr in (
                    ("mean", "x_mean"), ("sd", "x_std"), ("target_mean", "y_mean"),
                    ("target_sd", "y_std"))},
                **teacher_spec.domain_keys(domain_of(x_train), list(part.features))}
        x_test = table.x[test_rows]
        direct = np.asarray(estimator.predict(x_test), np.float64).reshape(len(x_test), -1)
        with atomic_path(path) as tmp:  # renamed onto teacher.onnx last: a complete teacher
            tmp.write_bytes(model.SerializeToString())
            onnx_pred = load_model_file(tmp).module(torch.tensor(x_test, dtype=torch.float32))
            row = {"command": "train-teacher", "dataset": part.name, "seed": seed,
                   "teacher_hidden": name, "n_train": len(train_rows), "n_val": len(part.y_val),
                   "n_test": len(test_rows),
                   **metrics.scores("teacher", scaler.standardise_y(onnx_pred), part.y_test,
                                    part.targets, scaler.y_std),
                   "onnx_max_abs_diff": float(np.abs(onnx_pred.double().numpy() - direct).max()),
                   "wall_s": wall, "members": 1, "device": "cpu", "status": "ok",
                   "teacher_path": str(path)}
            with atomic_path(path.with_name(SPEC)) as spec_tmp:
                spec_tmp.write_text(teacher_spec.to_yaml(spec, f"the spec of {name}, seed {seed}"))
            tables.write_metrics(path.parent, row)
        log.info("teacher written to %s (ONNX vs scikit-learn on the test rows: max |diff| "
                 "%.2g)", path, row["onnx_max_abs_diff"])
        frames.append(tables.write_metrics(member_dir, row))
    return frames
