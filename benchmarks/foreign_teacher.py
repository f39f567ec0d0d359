"""Issue 28's measurement (docs/results.md, "Teachers from elsewhere with a `dfkd spec` spec"):
does a teacher from elsewhere, with the spec `dfkd spec` writes from its training rows, reach the
student / teacher ratio of the same teacher distilled natively?

    python benchmarks/foreign_teacher.py OUT [--datasets pole mv] [--seeds 1 2 3 4 5]
        [--epochs 2000] [--formats torchscript onnx] [--sklearn pole] [--data-dir DIR]
        [--store outputs/teachers]

Arms, each a `dfkd distill` run of the default recipe at `--epochs` (bounded, domain off,
selection=fidelity, student mlp50), run one after another with OMP_NUM_THREADS=1 and skipped
when their members' metrics.csv exist (so a stopped measurement resumes):
- native: the store's mlp500 teachers (`dfkd train-teacher`), one population of the seeds,
  prior=auto (the copula from the checkpoints); native-gaussian: the same with prior=gaussian;
  native-autograd: the same with fast_path=off (the teacher through autograd, as a TorchScript
  one is: how far float rounding alone moves a bounded run's ratio);
- torchscript / onnx: each seed's teacher exported (`dfkd export`) and distilled per seed as a
  teacher from elsewhere with the spec `dfkd spec` wrote from that seed's training rows,
  prior=auto (the copula from the spec); `-gaussian`: the same with prior=gaussian (N(0, I),
  what such a teacher got before). An ONNX teacher cannot be differentiated and bounded refuses
  it, so the onnx arms and their reference (native-random) run strategy=random;
- sklearn (on the dataset --sklearn names): a GradientBoostingRegressor fitted on each seed's
  training rows, converted with skl2onnx, strategy=random, with the spec's statistics and without
  (sklearn-nostats: `dfkd spec --no-statistics`, so prior=auto is N(0, I)).

Prints per dataset and arm the per-seed validation ratio (student / teacher RMSE on the split's
validation rows), its mean and sd, the test ratio (reported only), the mean wall per run and,
paired by seed against the arm's references, the mean change of the validation ratio in % with
the seeds where it is lower and higher (by more than 0.01%).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_module

from dfkd_cli.config import register_configs
from dfkd_cli.data.datasets import load_table, split_for
from dfkd_cli.report.text import markdown_table

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REFERENCES = {"native-autograd": ["native"], "torchscript": ["native"], "torchscript-gaussian": ["native", "native-gaussian"],
              "onnx": ["native-random"], "onnx-gaussian": ["native-random"],
              "sklearn-nostats": ["sklearn"]}


def dfkd(log: Path, *args: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        subprocess.run(["dfkd", *args], env=ENV, stdout=out, stderr=subprocess.STDOUT, check=True)


def distill(out: Path, data: str, dataset: str, arm: str, seeds: list[int], epochs: int,
            *overrides: str) -> None:
    """One run of `arm` (members `seeds`), unless it has run."""
    run = out / "runs" / dataset / f"{arm}-{'_'.join(map(str, seeds))}"
    if not all((run / f"seed{s}" / "metrics.csv").exists() for s in seeds):
        dfkd(out / "logs" / dataset / f"{run.name}.log", "distill", f"dataset={dataset}",
             f"data_dir={data}", f"seeds=[{','.join(map(str, seeds))}]", f"epochs={epochs}",
             "progress=false", f"hydra.run.dir={run}", *overrides)


def training_rows(data: str, dataset: str, seed: int, path: Path) -> pd.DataFrame:
    """The rows seed's teacher was trained on, as its owner would have them (written to path)."""
    with initialize_config_module(config_module="dfkd_cli.configs", version_base="1.3"):
        cfg = compose(config_name="distill", overrides=[f"dataset={dataset}", f"data_dir={data}"])
    table = load_table(cfg.dataset, cfg.data_dir)
    rows = split_for(cfg.dataset, table, seed).rows[0]
    frame = pd.DataFrame(table.x[rows], columns=table.features).assign(
        **{t: table.y[rows, i] for i, t in enumerate(table.targets)})
    frame.to_csv(path, index=False, float_format="%.17g")
    return frame


def boosted_onnx(frame: pd.DataFrame, seed: int, path: Path) -> None:
    """A gradient-boosting regressor of the frame's last column on the others, as ONNX."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor

    x, y = frame.iloc[:, :-1].to_numpy("float32"), frame.iloc[:, -1].to_numpy()
    model = GradientBoostingRegressor(n_estimators=200, max_depth=5, random_state=seed).fit(x, y)
    path.write_bytes(to_onnx(model, x[:1]).SerializeToString())


def measure(args: argparse.Namespace) -> None:
    out, data, seeds, epochs = args.out, args.data_dir, args.seeds, args.epochs
    for dataset in args.datasets:
        store = f"teacher_store={args.store}"
        distill(out, data, dataset, "native", seeds, epochs, store)
        distill(out, data, dataset, "native-gaussian", seeds, epochs, store, "prior=gaussian")
        distill(out, data, dataset, "native-autograd", seeds, epochs, store, "fast_path=off")
        if "onnx" in args.formats:
            distill(out, data, dataset, "native-random", seeds, epochs, store, "strategy=random")
        for seed in seeds:
            files = out / "files" / dataset / f"seed{seed}"
            files.mkdir(parents=True, exist_ok=True)
            training_rows(data, dataset, seed, files / "train.csv")
            dfkd(files / "spec.log", "spec", "--data", str(files / "train.csv"),
                 "--out", str(files / "spec.yaml"))
            dfkd(files / "export.log", "export",
                 f"{args.store}/{dataset}/mlp500-tanh/seed{seed}/teacher.pt",
                 "--formats", *args.formats, "--out", str(files))
            for fmt in args.formats:
                model = files / ("teacher.onnx" if fmt == "onnx" else "teacher.torchscript.pt")
                foreign = [f"teacher={fmt}", f"teacher.path={model}",
                           f"teacher.spec={files / 'spec.yaml'}"]
                foreign += ["strategy=random"] if fmt == "onnx" else []
                distill(out, data, dataset, fmt, [seed], epochs, *foreign)
                distill(out, data, dataset, f"{fmt}-gaussian", [seed], epochs, *foreign,
                        "prior=gaussian")
    for seed in seeds if args.sklearn else []:
        files = out / "files" / args.sklearn / f"seed{seed}"
        files.mkdir(parents=True, exist_ok=True)
        frame = training_rows(data, args.sklearn, seed, files / "train.csv")
        if not (files / "boosted.onnx").exists():
            boosted_onnx(frame, seed, files / "boosted.onnx")
        for arm, flags in (("sklearn", []), ("sklearn-nostats", ["--no-statistics"])):
            dfkd(files / f"{arm}.log", "spec", "--data", str(files / "train.csv"), *flags,
                 "--out", str(files / f"{arm}.yaml"))
            distill(out, data, args.sklearn, arm, [seed], epochs, "teacher=onnx",
                    f"teacher.path={files / 'boosted.onnx'}",
                    f"teacher.spec={files / f'{arm}.yaml'}", "strategy=random")


def table(out: Path) -> pd.DataFrame:
    runs = pd.concat(pd.read_csv(p).assign(arm=p.parents[1].name.rsplit("-", 1)[0])
                     for p in sorted((out / "runs").glob("*/*/seed*/metrics.csv")))
    runs["val_ratio"] = runs.val_rmse / runs.teacher_val_rmse
    runs["test_ratio"] = runs.student_rmse / runs.teacher_rmse
    rows = []
    for (dataset, arm), cell in runs.groupby(["dataset", "arm"], sort=False):
        own = cell.set_index("seed").val_ratio
        row = {"dataset": dataset, "arm": arm, "n": len(own),
               **{f"seed {s}": v for s, v in own.items()},
               "val ratio": f"{own.mean():.4f} ± {own.std():.4f}",
               "test ratio": cell.test_ratio.mean(), "wall_s per run": cell.wall_s.mean()}
        changes = []
        for name in REFERENCES.get(arm, []):
            ref = runs[(runs.dataset == dataset) & (runs.arm == name)].set_index("seed")
            change = (own / ref.val_ratio.reindex(own.index) - 1).dropna()
            changes += [f"{100 * change.mean():+.2f} ({int((change < -1e-4).sum())} lower, "
                        f"{int((change > 1e-4).sum())} higher) vs {name}"] if len(change) else []
        row["paired val ratio change %"] = "; ".join(changes) or "-"
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=lambda p: Path(p).resolve())
    parser.add_argument("--datasets", nargs="*", default=["pole", "mv"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--formats", nargs="+", default=["torchscript", "onnx"])
    parser.add_argument("--sklearn", default="pole", help="dataset of the sklearn arms ('' none)")
    parser.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared/datasets"))
    parser.add_argument("--store", type=lambda p: str(Path(p).resolve()),
                        default="outputs/teachers", help="the mlp500 teachers (train-teacher)")
    parser.add_argument("--table-only", action="store_true", help="only print the runs' table")
    args = parser.parse_args(argv)
    register_configs()
    if not args.table_only:
        measure(args)
    print(markdown_table(table(args.out).round(4).astype(object).fillna("-")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
