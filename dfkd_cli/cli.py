"""`dfkd <command> [hydra overrides]`: picks the command, hands the rest to Hydra."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from dfkd_cli import __version__, usage
from dfkd_cli.errors import UserError, explain

log = logging.getLogger("dfkd")


def _imported(module: str, function: str = "run") -> Callable:
    """dfkd_cli.commands.<module>.<function>, imported when the command runs: `dfkd --help` and
    a mistyped command import neither torch nor pandas nor hydra (seconds of start-up)."""

    def command(*args: Any) -> Any:
        return getattr(importlib.import_module(f"dfkd_cli.commands.{module}"), function)(*args)

    return command


def _distill(cfg, run_dir: Path) -> Any:
    """`dfkd distill`, returning the objective a Hydra sweeper asks for (tracking/search.py)."""
    from dfkd_cli.commands import distill
    from dfkd_cli.tracking import search

    return search.objective(cfg.objective, cfg.selection, distill.run(cfg, run_dir))


# command -> (primary config name, what it runs, one-line help); a command without a config
# (report) is plain argparse and never reaches Hydra.
COMMANDS: dict[str, tuple[str | None, Callable, str]] = {
    "train-teacher": ("train_teacher", _imported("train_teacher"),
                      "train a teacher on a dataset into the teacher store"),
    "distill": ("distill", _distill,
                "distil a teacher into a small student with a synthetic-data strategy"),
    "probe": ("probe", _imported("probe"),
              "compare the strategies' inputs: quantiles of (T - S)^2 and ||x|| side by side"),
    "report": (None, _imported("report", "main"),
               "gather runs' metrics.csv into one table (mean +/- sd, wins vs a baseline)"),
    "export": (None, _imported("export", "main"),
               "export a checkpoint as TorchScript / ONNX (raw units) with a model card"),
    "evaluate": (None, _imported("evaluate", "main"),
                 "score a model on a labelled CSV: RMSE, MAE, R^2 and fidelity, raw units"),
    "spec": (None, _imported("spec", "main"),
             "write a teacher spec (scalers, domain, input statistics) from a training CSV"),
    "data": (None, _imported("data", "main"),
             "download the benchmark datasets into data_dir (dfkd data fetch cpusmall)"),
}

USAGE = f"""usage: dfkd <command> [hydra overrides...] [--cfg job] [-m] [--help]

dfkd {__version__}: data-free knowledge distillation of regression networks
(Zhou & Chiam 2023, arXiv 2301.04338).

commands:
""" + "".join(f"  {name:<15}{text}\n" for name, (_, _, text) in COMMANDS.items()) + """
examples:
  dfkd data fetch cpusmall              (into ./data, where dataset=cpusmall looks)
  dfkd train-teacher dataset=cpusmall seed=1
  dfkd distill dataset=cpusmall seed=1 strategy=bounded
  dfkd train-teacher -m dataset=cpusmall seed=1,2,3
  dfkd distill -m dataset=cpusmall strategy=random,bounded seed=1,2,3
  dfkd probe dataset=cpusmall seed=1
  dfkd report outputs/distill-multirun/2024-01-01/12-00-00-000000
  dfkd export outputs/distill/2024-01-01/12-00-00 --formats torchscript onnx
  dfkd evaluate --model student.pt --teacher teacher.pt --data test.csv --out scores.csv
  dfkd spec --data train.csv --target y --out spec.yaml
  dfkd distill --help          a command's groups, options and keys
  dfkd report --help           the report's options
  eval "$(dfkd completion bash)"   tab completion of commands, groups and keys
"""


def register_resolvers() -> None:
    """Resolvers dfkd's configs may use. `mod` pins jobs to GPUs round-robin in a parallel sweep:
    'device="cuda:${mod:${hydra:job.num},4}"' (job k on GPU k % 4). Registered in the launching
    process and again in each job (a joblib or submitit worker is a fresh process)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("mod"):
        OmegaConf.register_new_resolver("mod", lambda a, b: int(a) % int(b))


_composed = False  # set when a job starts: Hydra composed its config
# jobs of this process's sweep refused for their run directory (another run's files), which
# write no metrics row of their own
REFUSED: list[str] = []


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1: show the traceback of every error, a user error's too."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _job_failed(cfg, run_dir: Path, exc: Exception, message: str | None) -> None:
    """A sweep's job that failed: logged in one line (its traceback for a bug, or with
    HYDRA_FULL_ERROR=1) and recorded in its own metrics row, the sweep going on; refused for
    its run directory (another run's files), it writes nothing there."""
    from dfkd_cli.utils.run_dirs import RunDirTaken
    from dfkd_cli.utils.run_tables import write_metrics

    if isinstance(exc, RunDirTaken):
        log.error("job not run: %s", exc)
        REFUSED.append(str(exc))
        return
    if message is not None:  # the single run's one line (its hint included)
        log.error("job failed: %s", message)
    else:  # a bug, or HYDRA_FULL_ERROR=1: its traceback
        log.error("job failed: %s\n%s", exc, traceback.format_exc())
    write_metrics(run_dir, {"command": cfg.command, "dataset": cfg.dataset.name,
                            "seed": cfg.seed, "status": "failed",
                            "error": message or f"{type(exc).__name__}: {exc}"})


def _task(run: Callable) -> Callable[[Any], object]:
    """Wrap a command so user errors (bad input, memory running out, a file that cannot be
    written) print one line and exit 2. In a multirun a failing job records its status and
    error in its own metrics row and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig

    from dfkd_cli.config import validate
    from dfkd_cli.utils import runtime
    from dfkd_cli.utils.files import hold_run_lock, release_run_lock

    def task(cfg) -> object:
        global _composed
        _composed = True
        register_resolvers()
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        launcher = runtime.launcher_parent()  # a joblib worker's launcher, watched by the job
        try:
            hold_run_lock(run_dir)  # taken already for a single run (callbacks.WritableOutput)
        except UserError as exc:  # another process writes there: leave its files alone
            if not _is_multirun():
                print(f"dfkd: error: {exc}", file=sys.stderr)
                sys.exit(2)
            log.error("job not run: %s", exc)
            REFUSED.append(str(exc))
            return None
        try:
            validate(cfg)
            runtime.set_threads(cfg.threads)
            if cfg.keep_freed_memory:
                runtime.keep_freed_memory()
            return run(cfg, run_dir)
        except Exception as exc:
            message = explain(exc, f"lower batch_size (now {cfg.batch_size})"
                              + (" or run fewer seeds at once" if cfg.seeds else ""))
            if message is not None and full_error():
                message = None  # HYDRA_FULL_ERROR=1: the traceback of a user error too
            if not _is_multirun():
                if message is not None:
                    print(f"dfkd: error: {message}", file=sys.stderr)
                    sys.exit(2)
                raise
            _job_failed(cfg, run_dir, exc, message)
            return None
        finally:
            if _is_multirun():  # the worker goes on to other jobs: one open lock file per job
                release_run_lock(run_dir)
                runtime.exit_if_orphaned(launcher)  # unless its launcher has gone

    return task


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] == "--version":
        print(f"dfkd {__version__}")
        return
    if argv[0] in ("completion", "--complete"):
        _completion(argv[1:] if argv[0] == "completion" else None, " ".join(argv[1:]))
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"dfkd: error: unknown command {command!r}; valid commands: "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    config_name, run, summary = COMMANDS[command]
    if config_name is not None and any(a in ("-h", "--help") for a in rest):
        _print_or_exit(lambda: usage.command_help(command, summary, rest), command)
        return
    if config_name is None:
        try:
            sys.exit(run(rest))
        except Exception as exc:  # a file it cannot write, memory: one line; a bug: traceback
            message = explain(exc)
            if message is None:
                raise
            print(f"dfkd {command}: error: {message}", file=sys.stderr)
            sys.exit(2)
    _hydra_command(command, config_name, run, rest)


def _print_or_exit(text: Callable[[], str], command: str) -> None:
    try:
        print(text())
    except UserError as exc:
        print(f"dfkd {command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _completion(shell: list[str] | None, line: str) -> None:
    """`dfkd completion bash` prints the script; the script calls `dfkd --complete <line>`."""
    if shell is None:
        print("\n".join(usage.complete(line, list(COMMANDS))))
    elif shell == ["bash"]:
        print(usage.BASH, end="")
    else:
        print("dfkd: error: dfkd completion supports bash (zsh: autoload bashcompinit && "
              "bashcompinit, then the bash script)", file=sys.stderr)
        sys.exit(2)


def _hydra_command(command: str, config_name: str, run: Callable, rest: list[str]) -> None:
    """A command with a config: Hydra composes it and runs the job."""
    try:
        usage.check_arguments(command, rest)
    except UserError as exc:
        print(f"dfkd: error: {exc}", file=sys.stderr)
        sys.exit(2)
    import hydra

    from dfkd_cli.config import register_configs
    from dfkd_cli.tracking import callbacks
    from dfkd_cli.utils import runtime
    from dfkd_cli.utils.files import release_run_locks

    global _composed
    _composed = False  # this command's own: main may run again in one process (the tests)
    callbacks.SWEEP_END.clear()
    REFUSED.clear()
    register_configs()
    register_resolvers()
    runtime.mark_launcher()  # the jobs of a joblib sweep stop when this process goes
    sys.argv = [f"dfkd {command}", *rest]
    try:
        hydra.main(version_base="1.3", config_path="pkg://dfkd_cli.configs",
                   config_name=config_name)(_task(run))()
    except SystemExit as stop:
        # Hydra reports a config it cannot compose (unknown option or key, wrong type) with
        # exit code 1 before any job starts; dfkd's code for bad input is 2.
        if stop.code == 1 and not _composed:
            sys.exit(2)
        raise
    finally:
        release_run_locks()  # the command is over (main may run again in one process)
    end = callbacks.SWEEP_END
    if REFUSED:
        print(f"dfkd: error: {len(REFUSED)} job(s) not run: {REFUSED[0]}", file=sys.stderr)
        sys.exit(2)
    if end.get("error"):
        print(f"dfkd: error: {end['error']}", file=sys.stderr)
        sys.exit(1)
    if end.get("failed"):
        first = f"; the first, {end['first_failure']}" if end.get("first_failure") else ""
        print(f"dfkd: error: {end['failed']} of {end['jobs']} jobs failed or did not finish "
              f"(listed in {end['summary']}){first}", file=sys.stderr)
        sys.exit(1)
