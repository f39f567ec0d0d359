"""`dfkd report`: gathering runs, the per-cell statistics (checked against numbers worked out by
hand), the paired tests, the reference columns, failed and unfinished jobs, the paper presets."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import QUICK_DISTILL, REPO, dfkd_here, make_config
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dfkd_cli.commands import report
from dfkd_cli.config import register_configs
from dfkd_cli.report import gather, paired, summary, text, write


def write_run(run_dir: Path, **values) -> Path:
    """A metrics.csv as `dfkd distill` writes it, with the columns the report reads."""
    row = {"command": "distill", "dataset": "cpusmall", "student_hidden": "mlp25-tanh",
           "selection": "val", "status": "ok"} | values
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(run_dir / "metrics.csv", index=False)
    return run_dir


# student_rmse and teacher_rmse per seed of two cells (cpusmall, mlp25-tanh, selection=val)
BASE = {1: (0.30, 0.20), 2: (0.40, 0.20), 3: (0.50, 0.25)}     # random_sampling
BOUNDED = {1: (0.20, 0.20), 2: (0.30, 0.20), 3: (0.70, 0.25)}  # bounded


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    job = 0
    for arm, cell in (("random_sampling", BASE), ("bounded", BOUNDED)):
        for seed, (student, teacher) in cell.items():
            write_run(root / str(job), arm=arm, seed=seed, student_rmse=student,
                      teacher_rmse=teacher)
            job += 1
    return root


def cell(table: pd.DataFrame, arm: str, selection: str = "val") -> pd.Series:
    rows = table[(table.arm == arm) & (table.selection == selection)]
    assert len(rows) == 1, table
    return rows.iloc[0]


def test_two_cells_match_the_hand_computation(sweep):
    table, _ = summary.summarize(gather.gather([sweep]))
    base = cell(table, "random_sampling")
    # mean (0.3 + 0.4 + 0.5) / 3 = 0.4; sd sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    # ratio (0.3/0.2 + 0.4/0.2 + 0.5/0.25) / 3 = (1.5 + 2 + 2) / 3 = 11/6
    assert (base.n, base.n_failed) == (3, 0)
    assert base.rmse_mean == pytest.approx(0.4)
    assert base.rmse_sd == pytest.approx(0.1)
    assert base.ratio_mean == pytest.approx(11 / 6)
    assert base.teacher_rmse_mean == pytest.approx(0.65 / 3)
    assert pd.isna(base.n_pairs)  # the baseline is not paired with itself
    bounded = cell(table, "bounded")
    # mean (0.2 + 0.3 + 0.7) / 3 = 0.4; sd sqrt((0.04 + 0.01 + 0.09) / 2) = sqrt(0.07)
    # ratio (1 + 1.5 + 2.8) / 3 = 5.3 / 3
    # vs random_sampling per seed: -0.1, -0.1, +0.2 -> 2 wins, 1 loss; both paired tests give
    # p = 1 (sign test: 2 * P(X <= 1 | n=3) = 2 * 4/8, capped; Wilcoxon: W+ = W- = 3)
    assert bounded.n == 3
    assert bounded.rmse_mean == pytest.approx(0.4)
    assert bounded.rmse_sd == pytest.approx(math.sqrt(0.07))
    assert bounded.ratio_mean == pytest.approx(5.3 / 3)
    assert (bounded.n_pairs, bounded.wins, bounded.losses) == (3, 2, 1)
    assert bounded.p_value == pytest.approx(1.0)
    assert bounded.seeds == "1 2 3"


def test_files_written_and_printed(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0.4000 ± 0.1000" in printed and "0.4000 ± 0.2646" in printed
    assert "2/3 (p=1.000" in printed
    for name in write.OUTPUTS:
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "runs.csv")) == 6
    saved = pd.read_csv(out / "report.csv")
    assert sorted(saved.arm) == ["bounded", "random_sampling"]
    tex = (out / "report.tex").read_text()
    assert r"\begin{tabular}" in tex and r"random\_sampling" in tex and r"$\pm$" in tex
    assert report.main([str(sweep), "-q"]) == 0  # default --out: the first PATH
    assert (sweep / "report.md").is_file()


def test_reference_adds_the_published_mean(sweep, tmp_path):
    ref = tmp_path / "ref.csv"
    columns = ["dataset", "student_hidden", "seed", "teacher", *summary.REFERENCE_ARMS]
    rows = [["CPUSmall", 25, 0, 0.17, 0.38, 0.9, 0.30, 0.9, 0.9],
            ["CPUSmall", 25, 1, 0.19, 0.42, 0.9, 0.40, 0.9, 0.9],
            ["CPUSmall", 50, 0, 0.17, 9.0, 9.0, 9.0, 9.0, 9.0]]
    pd.DataFrame(rows, columns=columns).to_csv(ref, index=False)
    table = write.write_report([sweep], tmp_path / "out", reference=ref)["table"]
    bounded = cell(table, "bounded")  # direct_alpha_decreasing: 0.30, 0.40
    assert bounded.paper_mean == pytest.approx(0.35) and bounded.paper_n == 2
    assert bounded.paper_sd == pytest.approx(math.sqrt(0.005))
    assert bounded.paper_diff == pytest.approx(0.05) and bool(bounded.within_2sd)
    base = cell(table, "random_sampling")  # random_gaussian: 0.38, 0.42
    assert base.paper_mean == pytest.approx(0.40) and base.paper_teacher == pytest.approx(0.18)
    assert base.paper_diff == pytest.approx(0.0)
    assert "paper" in (tmp_path / "out" / "report.md").read_text()


# the real-data reference (arm real_kd) of the same cells; seed 4 has no data-free run
REAL_KD = {1: 0.10, 2: 0.20, 3: 0.35, 4: 0.9}


def test_ratio_to_reference_is_computed_from_the_gathered_rows(sweep):
    for job, (seed, rmse) in enumerate(REAL_KD.items()):
        write_run(sweep / f"real{job}", arm="real_kd", seed=seed, student_rmse=rmse,
                  teacher_rmse=0.2)
    table, notes = summary.summarize(gather.gather([sweep]))
    bounded = cell(table, "bounded")
    # over the seeds both have (1, 2, 3): reference mean (0.1 + 0.2 + 0.35) / 3 = 0.65 / 3;
    # ratio (0.2/0.1 + 0.3/0.2 + 0.7/0.35) / 3 = (2 + 1.5 + 2) / 3 = 5.5 / 3; bounded is below
    # the reference on no seed (differences +0.1, +0.1, +0.35)
    assert bounded.reference_arm == "real_kd"
    assert bounded.reference_rmse_mean == pytest.approx(0.65 / 3)
    assert bounded.ratio_to_reference == pytest.approx(5.5 / 3)
    assert (bounded.reference_n_pairs, bounded.reference_wins, bounded.reference_losses) == (
        3, 0, 3)
    assert bounded.reference_p_value == pytest.approx(0.25)  # Wilcoxon n=3 / sign test: 2/8
    base = cell(table, "random_sampling")  # 0.3/0.1, 0.4/0.2, 0.5/0.35
    assert base.ratio_to_reference == pytest.approx((3 + 2 + 0.5 / 0.35) / 3)
    real = cell(table, "real_kd")  # the reference's own row: its four seeds, no ratio to itself
    assert real.n == 4 and pd.isna(real.ratio_to_reference)
    assert not any("ratio_to_reference" in n for n in notes)
    shown = text.display(table)
    assert shown.loc[shown.arm == "bounded", "ratio to reference"].item() == "1.833"
    assert shown.loc[shown.arm == "bounded", "wins vs reference"].item().startswith("0/3 (p=0.250")
    assert list(table.arm) == ["random_sampling", "bounded", "real_kd"]  # references last


def test_ratio_to_reference_pairs_by_seed_when_the_seeds_do_not_line_up(tmp_path):
    """The reference has a seed (1) before the arm's first (2): each of the arm's seeds is paired
    with the reference's run of the same seed, not with the reference's run in the same place."""
    root = tmp_path / "sweep"
    for seed, rmse in ((3, 0.40), (1, 0.10), (2, 0.20)):  # found in no particular order
        write_run(root / f"real{seed}", arm="real_kd", seed=seed, student_rmse=rmse,
                  teacher_rmse=0.2)
    for seed, rmse in ((2, 0.30), (3, 0.50)):
        write_run(root / f"bounded{seed}", arm="bounded", seed=seed, student_rmse=rmse,
                  teacher_rmse=0.2)
    table, _ = summary.summarize(gather.gather([root]))
    bounded = cell(table, "bounded")
    # by seed: (0.30 / 0.20 + 0.50 / 0.40) / 2 = 1.375; by position it would be
    # (0.30 / 0.10 + 0.50 / 0.20) / 2 = 2.75
    assert bounded.ratio_to_reference == pytest.approx(1.375)
    assert bounded.reference_rmse_mean == pytest.approx(0.30)  # seeds 2 and 3 of the reference
    assert (bounded.reference_n_pairs, bounded.reference_wins, bounded.reference_losses) == (
        2, 0, 2)
    row = paired.against_reference(pd.Series([0.3, 0.5], index=[2, 3]),
                                   pd.Series([0.4, 0.1, 0.2], index=[3, 1, 2]), "real_kd")
    assert row["ratio_to_reference"] == pytest.approx(1.375)


def test_without_reference_rows_the_column_is_empty_and_says_why(sweep, tmp_path):
    result = write.write_report([sweep], tmp_path / "out")
    table = result["table"]
    assert "ratio_to_reference" in table.columns and table["ratio_to_reference"].isna().all()
    assert any("ratio_to_reference is empty" in n and "'real_kd' is not among these runs" in n
               for n in result["notes"])
    assert "ratio_to_reference is empty" in result["markdown"]
    assert "ratio to reference" in result["markdown"]  # the column is there, empty
    # a reference for another selection only: the val cells say which lack theirs
    write_run(sweep / "real", arm="real_kd", seed=1, student_rmse=0.1, teacher_rmse=0.2,
              selection="last")
    table, notes = summary.summarize(gather.gather([sweep]))
    assert table.loc[table.selection == "val", "ratio_to_reference"].isna().all()
    assert any("no real_kd rows on the same seeds for cpusmall/mlp25-tanh/val" in n for n in notes)


def test_the_real_reference_file_maps_onto_our_labels():
    """`--reference paper` is the authors' table, shipped in the package as they published it."""
    shared = REPO.parent / "shared" / "reference" / "paper_results_per_seed.csv"
    if shared.is_file():
        assert summary.reference_file("paper").read_bytes() == shared.read_bytes()
    ref = summary.read_reference("paper")
    assert set(ref.arm) == set(summary.REFERENCE_ARMS.values())
    assert {"compactiv", "cpusmall", "pole", "puma32h", "mv"} <= set(ref._dataset_key)
    assert set(ref.student_hidden) == {"mlp25-tanh", "mlp50-tanh"}


def test_failed_missing_and_superseded_runs_are_listed(sweep):
    # a failed job of the bounded cell (the row `dfkd distill` writes in a multirun), its cell
    # read from the job's saved config
    failed = write_run(sweep / "6", status="failed", seed=4, error="RuntimeError: boom")
    (failed / "metrics.csv").write_text("command,dataset,seed,status,error\n"
                                        "distill,cpusmall,4,failed,RuntimeError: boom\n")
    cfg = make_config("distill", ["arm=bounded", "selection=val", "student=mlp25",
                                  "dataset=cpusmall", "seed=4"])
    (failed / ".hydra").mkdir()
    OmegaConf.save(cfg, failed / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(["arm=bounded", "seed=4"]), failed / ".hydra" / "overrides.yaml")
    # a job that started and left no metrics (killed), and a rerun of seed 1 that supersedes
    (sweep / "7" / ".hydra").mkdir(parents=True)
    OmegaConf.save(make_config("distill", ["arm=random_sampling", "dataset=cpusmall",
                                           "student=mlp25", "selection=val", "seed=5"]),
                   sweep / "7" / ".hydra" / "config.yaml")
    older = sweep / "0" / "metrics.csv"
    rerun = write_run(sweep / "8", arm="random_sampling", seed=1, student_rmse=0.30,
                      teacher_rmse=0.20)
    rerun_time = older.stat().st_mtime + 10
    os.utime(rerun / "metrics.csv", (rerun_time, rerun_time))

    result = write.write_report([sweep])
    table, fails = result["table"], result["failures"]
    assert cell(table, "bounded").n_failed == 1 and cell(table, "bounded").n == 3
    assert cell(table, "random_sampling").n_failed == 1  # the killed job
    assert cell(table, "random_sampling").n == 3  # seed 1 counted once
    assert set(fails.status) == {"failed", "missing"}
    row = fails[fails.status == "failed"].iloc[0]
    assert (row.arm, row.selection, row.student_hidden) == ("bounded", "val", "mlp25-tanh")
    assert row.run_dir == str(failed) and "boom" in row.error and "seed=4" in row.overrides
    assert fails[fails.status == "missing"].iloc[0].run_dir == str(sweep / "7")
    assert any("superseded" in n and str(sweep / "0") in n for n in result["notes"])
    assert "Failed or incomplete runs (2)" in result["markdown"]


def test_population_members_are_gathered(tmp_path):
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(make_config("distill", ["seeds=[1,2]"]), job / ".hydra" / "config.yaml")
    for seed in (1, 2):
        write_run(job / f"seed{seed}", arm="bounded", seed=seed, student_rmse=0.1 * seed,
                  teacher_rmse=0.1)
    result = write.write_report([tmp_path / "sweep"])
    assert result["failures"].empty  # metrics below the job dir: not a missing job
    assert cell(result["table"], "bounded").n == 2


def test_sign_test_exact_values():
    assert paired.sign_test([1.0] * 10) == pytest.approx(2 / 1024)
    assert paired.sign_test([1, 1, 1, 1, -1]) == pytest.approx(2 * 6 / 32)
    assert paired.sign_test([1, -1, 0, 0]) == 1.0  # ties dropped
    assert paired.sign_test([0, 0]) == 1.0


def test_paired_test_without_scipy_is_the_sign_test(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    assert paired.paired_test([-1.0] * 6) == (pytest.approx(2 / 64), "sign")


def test_paired_test_is_wilcoxon_with_scipy():
    pytest.importorskip("scipy")
    p, test = paired.paired_test([-1.0, -2.0, -3.0, -4.0, -5.0, -6.5])
    assert test == "wilcoxon" and p == pytest.approx(2 / 64)  # exact: all ranks one side
    assert paired.paired_test([0.0, 0.0]) == (1.0, "wilcoxon")


def test_plots(sweep, tmp_path):
    pytest.importorskip("matplotlib")
    for run_dir in sorted(sweep.iterdir()):
        pd.DataFrame({"epoch": [1, 3], "loss": [0.5, 0.2], "val_rmse": [0.6, 0.4]}).to_csv(
            run_dir / "history.csv", index=False)
    written = write.write_report([sweep], tmp_path / "out", plots=True)["written"]
    names = {p.name for p in written}
    assert {"rmse_cpusmall.png", "curves_cpusmall_mlp25-tanh.png"} <= names
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")


def test_plots_without_matplotlib_is_a_clear_error(sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert report.main([str(sweep), "--plots", "-q"]) == 2
    assert "--plots needs matplotlib: pip install 'dfkd-cli[plots]'" in capsys.readouterr().err


def test_nothing_to_report_is_an_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no metrics.csv below" in capsys.readouterr().err
    assert report.main([str(tmp_path / "nope")]) == 2


def test_report_on_a_real_sweep_with_a_failed_job(workdir, tmp_path):
    """seed 99 has no teacher in the store: those jobs fail, the sweep goes on, and both the
    sweep-end summary and `dfkd report` list them as failed."""
    sweep = tmp_path / "sweep"
    proc = dfkd_here("distill", "-m", "arm=random_sampling,bounded", "seed=1,99", *QUICK_DISTILL,
                     f"hydra.sweep.dir={sweep}", cwd=workdir, check=False)
    assert proc.returncode == 1 and "2 of 4 jobs failed" in proc.stderr
    # the end-of-sweep callback already wrote the summary and every job's row
    runs = pd.read_csv(sweep / "runs.csv")
    assert sorted(runs.status) == ["failed", "failed", "ok", "ok"]
    out = dfkd_here("report", str(sweep), "--out", str(tmp_path / "out"), cwd=workdir).stdout
    assert "Failed or incomplete runs (2)" in out and "no teacher checkpoint" in out
    fails = summary.failures(gather.gather([sweep]))
    # jobs: 0 random_sampling seed 1, 1 random_sampling seed 99, 2 bounded seed 1, 3 bounded 99
    assert sorted(Path(d).name for d in fails.run_dir) == ["1", "3"]
    table = pd.read_csv(tmp_path / "out" / "report.csv")
    assert list(table.n) == [1, 1] and list(table.n_failed) == [1, 1]
    # the bounded cell recomputed from its job's own metrics.csv
    job = pd.read_csv(sweep / "2" / "metrics.csv").iloc[0]
    base = pd.read_csv(sweep / "0" / "metrics.csv").iloc[0]
    bounded = table[table.arm == "bounded"].iloc[0]
    assert bounded.rmse_mean == pytest.approx(job.student_rmse)
    assert bounded.ratio_mean == pytest.approx(job.student_rmse / job.teacher_rmse)
    assert bounded.wins == int(job.student_rmse < base.student_rmse) and bounded.n_pairs == 1


def test_help_lists_the_report_command(tmp_path):
    assert "report" in dfkd_here("--help", cwd=tmp_path).stdout
    assert "--baseline" in dfkd_here("report", "--help", cwd=tmp_path).stdout


# --- the paper's presets ---------------------------------------------------------------------

def sweep_params(experiment: str) -> dict:
    register_configs()
    with initialize_config_module(config_module="dfkd_cli.configs", version_base="1.3"):
        cfg = compose(config_name="distill", overrides=[f"experiment={experiment}"],
                      return_hydra_config=True)
    return cfg, {k: v.split(",") for k, v in cfg.hydra.sweeper.params.items()}


def test_paper_preset_is_the_papers_protocol():
    cfg, params = sweep_params("paper")
    assert list(cfg.seeds) == list(range(1, 11))
    assert params == {"dataset": ["compactiv", "cpusmall", "pole", "puma32h", "mv"],
                      "student": ["mlp25", "mlp50"],
                      "arm": ["random_sampling", "generator", "bounded", "generator_alpha1",
                              "bounded_alpha1", "real_kd", "real_data"]}
    assert cfg.selection == "both"  # every job reports the paper's val and the data-free last
    # the paper's arms, unchanged, then the real-data reference arms
    assert params["arm"] == list(summary.REFERENCE_ARMS.values()) + summary.REAL_ARMS
    for group in ("dataset", "student", "arm"):  # every swept option exists
        for option in params[group]:
            assert (REPO / "configs" / group / f"{option}.yaml").is_file(), (group, option)
    assert (cfg.epochs, cfg.steps_per_epoch) == (2000, 10)


def test_paper_quick_preset():
    cfg, params = sweep_params("paper_quick")
    assert list(cfg.seeds) == [1, 2, 3] and params["dataset"] == ["cpusmall"]
    assert len(params["arm"]) == 7 and cfg.selection == "both"


def test_arms_that_differ_in_a_key_of_their_own_are_paired(sweep):
    """A key each arm holds at one value is part of the arm (arm=datafree's prior=auto beside
    the other arms' gaussian): such arms are paired by seed. A key that varies within an arm
    stays a condition to pair on."""
    for job, (seed, (student, teacher)) in enumerate(BOUNDED.items()):
        write_run(sweep / f"own{job}", arm="datafree", prior="auto", seed=seed,
                  student_rmse=student - 0.05, teacher_rmse=teacher)
    for run in sweep.iterdir():  # the other two arms drew from N(0, I)
        metrics = pd.read_csv(run / "metrics.csv")
        if metrics.arm.item() != "datafree":
            metrics.assign(prior="gaussian").to_csv(run / "metrics.csv", index=False)
    table, _ = summary.summarize(gather.gather([sweep]), baseline="bounded")
    own = cell(table, "datafree")
    assert (own.n_pairs, own.wins, own.losses) == (3, 3, 0)
    assert cell(table, "random_sampling").n_pairs == 3
    # the baseline under both priors: prior is a condition now, each cell paired within it
    for job, (seed, (student, teacher)) in enumerate(BOUNDED.items()):
        write_run(sweep / f"auto{job}", arm="bounded", prior="auto", seed=seed,
                  student_rmse=student - 0.1, teacher_rmse=teacher)
    table, _ = summary.summarize(gather.gather([sweep]), baseline="bounded")
    assert set(table.loc[table.arm == "bounded", "prior"]) == {"auto", "gaussian"}
    own = cell(table, "datafree")
    assert (own.n_pairs, own.wins, own.losses) == (3, 0, 3)  # against bounded's prior=auto
    plain = cell(table, "random_sampling")
    assert (plain.n_pairs, plain.wins, plain.losses) == (3, 1, 2)  # against its gaussian


def test_the_keys_that_never_split_a_cell_hold_every_key_a_resume_may_change():
    """The report's own list of keys that are not a sweep's axes covers the replicates and every
    key that does not change what a run computes (loop/resume.py's MAY_CHANGE)."""
    from dfkd_cli.loop.resume import MAY_CHANGE
    from dfkd_cli.report.gather import NOT_AXES

    assert {"seed", "seeds", *MAY_CHANGE} <= set(NOT_AXES)


def test_a_metrics_file_of_an_older_dfkd_is_read_under_todays_column_names(tmp_path):
    """fidelity_rmse_gaussian was fidelity_rmse_prior: the report and objective= read both."""
    from dfkd_cli.report.gather import gather
    from dfkd_cli.tracking.search import objective

    for name, folder in (("fidelity_rmse_prior", "old"), ("fidelity_rmse_gaussian", "new")):
        (tmp_path / folder).mkdir()
        pd.DataFrame([{"status": "ok", "seed": 1, "selection": "last", name: 0.25,
                       f"{name}_y2": 0.5}]).to_csv(tmp_path / folder / "metrics.csv",
                                                   index=False)
    runs = gather([tmp_path])
    assert runs.fidelity_rmse_gaussian.tolist() == [0.25, 0.25]
    assert runs.fidelity_rmse_gaussian_y2.tolist() == [0.5, 0.5]
    assert "fidelity_rmse_prior" not in runs.columns
    for old_or_new in ("fidelity_rmse_prior", "fidelity_rmse_gaussian"):
        assert objective(old_or_new, "last", runs.iloc[:1]) == 0.25
