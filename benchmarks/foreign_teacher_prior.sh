#!/usr/bin/env bash
# Issue 28, a partial measurement (not the issue's 5-seed protocol): dfkd's own pole teachers,
# exported to TorchScript, distilled as teachers from elsewhere with a `dfkd spec` spec, once with
# prior=auto (the copula, from the spec's statistics) and once with prior=gaussian (N(0, I), what
# such a teacher got before); the same spec (scalers) in both, so only the prior differs.
# usage: benchmarks/foreign_teacher_prior.sh OUT_DIR [SEEDS="1 2 3"] [EPOCHS=1000] [TEACHER_EPOCHS=100]
set -euo pipefail
out=$(realpath -m "$1"); seeds=${2:-"1 2 3"}; epochs=${3:-1000}; teacher_epochs=${4:-100}
data=${DFKD_DATA_DIR:-$(dirname "$0")/../../shared/datasets}; data=$(realpath "$data")
mkdir -p "$out" && cd "$out"
dfkd train-teacher dataset=pole "seeds=[${seeds// /,}]" data_dir="$data" epochs="$teacher_epochs" \
    progress=false teacher_store="$out/teachers" hydra.run.dir="$out/train-teacher"
for s in $seeds; do
    store="$out/teachers/pole/mlp500-tanh/seed$s"
    dfkd export "$store/teacher.pt" --formats torchscript --out "$out/model$s"
    # the rows the teacher was trained on, as its owner would have them
    python - "$data" "$s" "$out/train$s.csv" <<'PY'
import sys
import pandas as pd
from hydra import compose, initialize_config_module
from dfkd_cli.config import register_configs
from dfkd_cli.data.datasets import load_table, split_for
register_configs()
with initialize_config_module(config_module="dfkd_cli.configs", version_base="1.3"):
    cfg = compose(config_name="distill", overrides=["dataset=pole", f"data_dir={sys.argv[1]}"])
table = load_table(cfg.dataset, cfg.data_dir)
rows = split_for(cfg, table, int(sys.argv[2])).rows[0]
pd.DataFrame(table.x[rows], columns=table.features).assign(
    **{t: table.y[rows, i] for i, t in enumerate(table.targets)}).to_csv(
    sys.argv[3], index=False, float_format="%.17g")
PY
    dfkd spec --data "$out/train$s.csv" --out "$out/spec$s.yaml"
    for prior in auto gaussian; do
        dfkd distill dataset=pole data_dir="$data" seed="$s" teacher=torchscript \
            teacher.path="$out/model$s/teacher.torchscript.pt" teacher.spec="$out/spec$s.yaml" \
            prior=$prior epochs="$epochs" progress=false hydra.run.dir="$out/runs/$prior-seed$s"
    done
done
python - "$out" <<'PY'
import sys
from pathlib import Path
import pandas as pd
rows = [pd.read_csv(p).assign(run=p.parent.name) for p in sorted(Path(sys.argv[1], "runs").glob("*/metrics.csv"))]
frame = pd.concat(rows)
frame["val_ratio"] = frame.val_rmse / frame.teacher_val_rmse
frame["prior_run"] = frame.run.str.split("-").str[0]
print(frame[["run", "selection", "teacher_val_rmse", "val_rmse", "val_ratio", "wall_s"]].to_string(index=False))
print(frame.groupby("prior_run").val_ratio.agg(["mean", "std", "count"]).to_string())
PY
