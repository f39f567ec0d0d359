"""The student loop (Zhou & Chiam 2023, Eq. 6) as a resumable, fault-aware state machine.

For epoch t of E, alpha = alpha(t) (loop/settings.py Alpha), and each of n_s steps draws x_g
from the strategy and x_p from the run's prior (prior=: the teacher's copula by default, N(0, I)
in the paper; data/priors.py), both of batch size m, and minimises

    L_S = alpha(t) * mean((T(x_g) - S(x_g))^2) + (1 - alpha(t)) * mean((T(x_p) - S(x_p))^2).

With an input domain (`domain=on`) every batch [x_g; x_p] is projected onto it before the
teacher labels it: the one place where sample meets domain, so strategies stay unaware of
feature types. A term whose weight is 0 is not computed (its samples are not drawn). Everything is a tensor
program over a population of K independent members; nothing inside an epoch reads a value back
to the host. Every `log_every` epochs the loop writes a history row per member and checks that
each member's losses and weights are finite: a member that is not is rolled back to its last
finite weights and either stops (`on_nonfinite=stop`, status `diverged`) or carries on
(`on_nonfinite=skip`). With `stop=plateau` each member stops alone when its fidelity on the
fixed synthetic set has stopped improving (loop/stopping.py), frozen while the others train;
the loop ends when no member is left training. `state_dict()` holds everything needed to
continue bit for bit. After the run, `selected_epochs(selection)` says which epoch each member
reports and `use(selection)` puts those weights in the student, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from dfkd_cli.loop.selection import SCORE_COLUMNS
from dfkd_cli.loop.settings import LoopSettings
from dfkd_cli.loop.stopping import Frozen, Plateau, reasons
from dfkd_cli.nets import architecture, factory, mlp
from dfkd_cli.nets.mlp import Snapshot, per_member
from dfkd_cli.nets.optim import make_optimizer
from dfkd_cli.strategies.base import batch_diagnostics
from dfkd_cli.utils.progress import Progress
from dfkd_cli.utils.rng import Streams


def row_weights(n_g: int, n_p: int, alpha: float, device: torch.device) -> torch.Tensor:
    """dL_S/d(T - S) per row of x = [x_g; x_p], over 2 (T - S): alpha / n_g for the x_g rows and
    (1 - alpha) / n_p for the x_p rows, times 2; shape (1, n_g + n_p, 1). Constant in an epoch."""
    return torch.cat([torch.full((n_g,), 2 * alpha / max(n_g, 1), device=device),
                      torch.full((n_p,), 2 * (1 - alpha) / max(n_p, 1), device=device)]
                     ).view(1, -1, 1)


@torch.no_grad()
def student_step(y: torch.Tensor, student, opt: torch.optim.Optimizer,
                 x: torch.Tensor, n_g: int, weights: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on L_S for x = [x_g; x_p] (the first n_g rows of each member's batch
    are x_g; `weights` from row_weights) and its labels y, T(x) but for the real-data reference
    (Strategy.labels). Back-propagates through the network seam (`param_grads`: by hand on the
    fast path, autograd otherwise); returns the per-member means of (y - S)^2 on x_g and on x_p,
    shape (K,) each. The members are independent: member k's gradient comes from member k's
    loss only."""
    saved = student.trace(x)
    diff = saved[-1] - y
    squared = diff.pow(2).sum(dim=2)
    loss_g = squared[:, :n_g].mean(dim=1) if n_g else squared.new_zeros(squared.shape[0])
    loss_p = (squared[:, n_g:].mean(dim=1) if n_g < x.shape[1]
              else squared.new_zeros(squared.shape[0]))
    for p, g in zip(student.opt_params, student.param_grads(saved, diff * weights)):
        p.grad = g
    opt.step()
    return loss_g, loss_p


@dataclass
class Best:
    """A selection's best so far, per member: its weights, its RMSE on the set that scores the
    selection (inf: none yet) and its epoch (-1: none yet)."""

    weights: Snapshot
    rmse: torch.Tensor
    epoch: torch.Tensor


class StudentLoop:
    """E epochs x n_s steps of L_S for a population; see the module docstring."""

    def __init__(self, settings: LoopSettings, teacher, student, strategy,
                 val: tuple[torch.Tensor, torch.Tensor] | None,
                 fidelity: tuple[torch.Tensor, torch.Tensor] | None = None,
                 project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """`val`: the real validation rows (x, y); `fidelity`: a fixed synthetic set (x, T(x));
        each selection that names one keeps each member's epoch of least RMSE on it.
        `project`: the input domain's projection (None: none); `augment`: what x_g goes
        through before it is labelled (shift=: data/images.py RandomShift; None: nothing)."""
        self.settings, self.teacher, self.student, self.strategy, self.project = (
            settings, teacher, student, strategy, project)
        self.augment = augment
        members, device = student.members, student.params[0].device
        self.opt = make_optimizer(settings.optimizer, student.opt_params,
                                  fast=isinstance(student, mlp.StackedMLP))
        params = student.params
        self.plateau = Plateau(settings.stop, members, device)
        self.frozen = Frozen(student, self.opt)
        wanted = settings.selections + (["fidelity"] if self.plateau.on else [])
        sets = {name: rows for name, rows in (("val", val), ("fidelity", fidelity))
                if name in wanted}
        missing = [name for name, rows in sets.items() if rows is None]
        if missing:
            raise ValueError(f"selection={settings.selection} (or stop=plateau) scores the "
                             f"{' and '.join(missing)} set, and none was given")
        self.sets: dict[str, tuple[torch.Tensor, torch.Tensor]] = sets
        self.best = {name: Best(Snapshot(params),
                                torch.full((members,), float("inf"), device=device),
                                torch.full((members,), -1, device=device))
                     for name in self.sets}
        self.finite = Snapshot(params)  # each member's weights at its last finite log point
        self.finite_epoch = torch.full((members,), -1, device=device)  # -1: the untrained start
        self.diverged_epoch = torch.full((members,), -1, device=device)
        self.skips = torch.zeros(members, dtype=torch.long, device=device)
        self.zero = torch.zeros(members, device=device)
        self.sums = {"loss": self.zero.clone(), "loss_g": self.zero.clone(),
                     "loss_p": self.zero.clone()}
        self.steps_logged = 0
        self.epoch = 0  # the next epoch to run
        self.alpha = settings.alpha.at(0, settings.epochs)  # the current epoch's alpha
        self.diagnostics: dict[str, torch.Tensor] = {}  # the strategy's, this epoch
        self.x_g: torch.Tensor | None = None  # the last synthetic batch, for the log's figures
        self.history: list[list[dict[str, Any]]] = [[] for _ in range(members)]
        self.scores: dict[str, torch.Tensor] = {}
        self.prepared = False
        self.prepared_stats: dict[str, torch.Tensor] = {}
        self.ended: Snapshot | None = None  # the weights training ended with, once use() ran

    @property
    def done(self) -> bool:
        return self.epoch >= self.settings.epochs

    def run(self, should_stop: Callable[[], bool] = lambda: False,
            checkpoint: Callable[[], None] | None = None,
            on_log: Callable[[], None] = lambda: None) -> None:
        """Run epochs until the end, until every member has diverged, or until `should_stop()`
        (checked after every epoch). `checkpoint()` is called every `checkpoint_every` epochs,
        `on_log()` after every history row (the trackers). With stop=plateau it also ends when
        every member has stopped or diverged."""
        settings, T = self.settings, self.teacher.module
        if not self.prepared:
            self.prepared_stats = self.strategy.prepare(T)  # joins the first history row
            self.prepared = True
        with Progress(settings.label, settings.epochs, settings.progress_every,
                      settings.progress, start=self.epoch, early_stop=self.plateau.on) as progress:
            for epoch in range(self.epoch, settings.epochs):
                self._epoch(epoch)
                self.epoch = epoch + 1
                progress.update(self.epoch, self.progress_figures)
                if self.epoch % settings.log_every == 0 or self.done:
                    none_left = self._log(epoch)
                    on_log()
                    if none_left:
                        break
                if (checkpoint and settings.checkpoint_every
                        and self.epoch % settings.checkpoint_every == 0):
                    checkpoint()
                if should_stop():
                    break

    @torch.no_grad()
    def progress_figures(self) -> str:
        """The progress line's figures: members still training, and the mean over them of this
        epoch's RMSE on each scored set (fidelity, val), else of the loss since the last log."""
        training = ~self.plateau.stopped & (self.diverged_epoch < 0)
        count = int(training.sum())
        figures = [f"{count}/{training.numel()} members training"]
        if not count:
            return figures[0]
        for name, score in self.scores.items():
            figures.append(f"{name} RMSE {float(score[training].mean()):.4g}")
        if not self.scores and self.steps_logged:
            loss = self.sums["loss"][training].mean() / self.steps_logged
            figures.append(f"loss {float(loss):.4g}")
        return ", ".join(figures)

    def _epoch(self, epoch: int) -> None:
        settings, T, S = self.settings, self.teacher.module, self.student
        m = settings.batch_size
        alpha = settings.alpha.at(epoch, settings.epochs)
        self.alpha = alpha
        self.diagnostics = self.strategy.update(T, S) if alpha > 0 else {}
        self.x_g = None
        n_g, n_p = (m if alpha > 0 else 0), (m if alpha < 1 else 0)
        weights = row_weights(n_g, n_p, alpha, self.zero.device)
        epoch_g, epoch_p = self.zero.clone(), self.zero.clone()  # summed over the epoch's steps
        for _ in range(settings.steps_per_epoch):
            batches = []
            if alpha > 0:
                self.x_g = self.strategy.sample(T, S, m)
                if self.augment is not None:
                    self.x_g = self.augment(self.x_g)
                batches.append(self.x_g)
            if alpha < 1:
                batches.append(self.strategy.prior(m))
            x = torch.cat(batches, dim=1) if len(batches) > 1 else batches[0]
            if self.project is not None:
                x = self.project(x)
                self.x_g = x[:, :n_g] if n_g else None
            y = self.strategy.labels(T, x, n_g)
            loss_g, loss_p = student_step(y, S, self.opt, x, n_g, weights)
            self.frozen.apply()  # stopped members (stop=plateau) keep their weights
            epoch_g += loss_g
            epoch_p += loss_p
        self.sums["loss"] += alpha * epoch_g + (1 - alpha) * epoch_p
        self.sums["loss_g"] += epoch_g
        self.sums["loss_p"] += epoch_p
        self.steps_logged += settings.steps_per_epoch
        self.scores = {}
        for name, (x, y) in self.sets.items():
            with torch.no_grad():
                score = (S(x) - y).pow(2).mean(dim=(1, 2)).sqrt()
            best = self.best[name]
            better = score < best.rmse  # NaN is never better
            best.rmse = torch.where(better, score, best.rmse)
            best.epoch = torch.where(better, epoch, best.epoch)
            best.weights.take(better)
            self.scores[name] = score

    @torch.no_grad()
    def _log(self, epoch: int) -> bool:
        """Write a history row per member still training (or stopping here), handle non-finite
        members and apply stop=plateau; True when every member has diverged or stopped (nothing
        left to train)."""
        T, S = self.teacher.module, self.student
        stats = {k: v / max(self.steps_logged, 1) for k, v in self.sums.items()}
        stats |= self.prepared_stats | self.diagnostics
        self.prepared_stats = {}
        if self.x_g is not None:
            stats |= batch_diagnostics(T, S, self.x_g, self.strategy.start, self.teacher.box)
        stats |= {SCORE_COLUMNS[name]: score for name, score in self.scores.items()}
        finite = torch.isfinite(stats["loss"])
        for p in S.params:
            finite &= torch.isfinite(p).flatten(1).all(dim=1)
        bad = ~finite & (self.diverged_epoch < 0)
        self.finite.restore(bad)  # roll bad members back to their last finite weights
        if self.settings.on_nonfinite == "skip":
            self.skips += bad.long()
            self._reset_optimizer_state(bad)
        else:
            self.diverged_epoch = torch.where(bad, epoch, self.diverged_epoch)
        kept = finite & (self.diverged_epoch < 0)
        self.finite.take(kept)
        self.finite_epoch = torch.where(kept, epoch, self.finite_epoch)
        stats["nonfinite"] = (~finite).float()
        logged = ~self.plateau.stopped  # a stopped member's history ends where it stopped
        self._stop(epoch)
        columns = {k: v.tolist() for k, v in stats.items()}  # one host sync per log row
        for k, (rows, write) in enumerate(zip(self.history, logged.tolist())):
            if write:
                rows.append({"epoch": epoch, "alpha": self.alpha,
                             **{name: values[k] for name, values in columns.items()}})
        self.sums = {k: self.zero.clone() for k in self.sums}
        self.steps_logged = 0
        return bool(((self.diverged_epoch >= 0) | self.plateau.stopped).all())

    def _stop(self, epoch: int) -> None:
        """stop=plateau at a log point once alpha has settled (a plateau while alpha still moves
        is not the end: docs/results.md): count each training member's improvement of its best
        fidelity RMSE, stop those past their patience and freeze them from now on."""
        if not self.plateau.on or not self.settings.alpha.settled(epoch, self.settings.epochs):
            return
        active = ~self.plateau.stopped & (self.diverged_epoch < 0)
        newly = self.plateau.update(self.best["fidelity"].rmse, active, epoch)
        if bool(newly.any()):
            self.frozen.hold(self.plateau.stopped)

    def _reset_optimizer_state(self, members: torch.Tensor) -> None:
        """Zero the optimiser's per-parameter state (RMSprop / Adam averages, momentum) of the
        given members, so a rolled-back member restarts cleanly."""
        owners, flags = self.student.owners, members.tolist()
        for i, p in enumerate(self.student.opt_params):
            for value in self.opt.state.get(p, {}).values():
                if not (torch.is_tensor(value) and value.shape == p.shape):
                    continue
                if owners is None:  # stacked (K, ...) parameters
                    value.masked_fill_(per_member(members, value).expand_as(value), 0.0)
                elif flags[owners[i]]:  # member owners[i]'s own parameter
                    value.zero_()

    def selected_epochs(self, selection: str) -> list[int]:
        """Each member's epoch that `selection` picks: the best on the validation rows (val) or
        on the fidelity set (fidelity), or the last with finite weights (last: where a member
        stopped, diverged or the run ended); -1 is the untrained start."""
        if selection in self.best:
            return self.best[selection].epoch.tolist()
        diverged = self.diverged_epoch >= 0
        last = torch.where(self.plateau.stopped, self.plateau.epoch, self.epoch - 1)
        return torch.where(diverged, self.finite_epoch, last).tolist()

    @torch.no_grad()
    def use(self, selection: str) -> None:
        """Put each member's weights of `selected_epochs(selection)` in the student. Any order
        works: the first call keeps the weights training ended with, which `last` starts from."""
        if self.ended is None:
            self.ended = Snapshot(self.student.params)
        everyone = torch.ones_like(self.diverged_epoch, dtype=torch.bool)
        if selection in self.best:
            self.best[selection].weights.restore(everyone)
            return
        self.ended.restore(everyone)
        self.finite.restore(self.diverged_epoch >= 0)

    def status(self) -> list[str]:
        return ["diverged" if e >= 0 else "ok" for e in self.diverged_epoch.tolist()]

    def outcome(self, interrupted: bool) -> list[dict[str, Any]]:
        """How each member's training ended, as its metrics columns: epochs_run, stopped_epoch
        and stop_reason (stop=plateau), diverged_epoch (None when it did not) and
        nonfinite_skips."""
        diverged = self.diverged_epoch.tolist()
        ran = torch.where(self.plateau.stopped, self.plateau.epoch + 1, self.epoch).tolist()
        stops = reasons(self.plateau.epoch.tolist(), diverged, self.epoch - 1, interrupted,
                        self.plateau.on)
        return [{"epochs_run": ran[k], **stops[k],
                 "diverged_epoch": diverged[k] if diverged[k] >= 0 else None,
                 "nonfinite_skips": int(self.skips[k])} for k in range(len(diverged))]

    # Resuming: everything the loop's future depends on.

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "prepared": self.prepared,
                "prepared_stats": self.prepared_stats,  # not yet logged when stopped early
                "student": self.student.state_dict(), "optimizer": self.opt.state_dict(),
                "strategy": self.strategy.state_dict(), "rng": self.strategy.rng.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best": {name: best.weights.kept for name, best in self.best.items()},
                "best_loss": {name: best.rmse for name, best in self.best.items()},
                "best_epoch": {name: best.epoch for name, best in self.best.items()},
                "finite": self.finite.kept, "finite_epoch": self.finite_epoch,
                "diverged_epoch": self.diverged_epoch,
                "skips": self.skips, "sums": self.sums, "steps_logged": self.steps_logged,
                "plateau": self.plateau.state_dict(), "history": self.history}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.opt.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.strategy.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        for name, best in self.best.items():
            for kept, saved in zip(best.weights.kept, state["best"][name]):
                kept.copy_(saved)
            best.rmse, best.epoch = state["best_loss"][name], state["best_epoch"][name]
        for kept, saved in zip(self.finite.kept, state["finite"]):
            kept.copy_(saved)
        self.epoch, self.prepared = state["epoch"], state["prepared"]
        self.prepared_stats = state["prepared_stats"]
        self.diverged_epoch, self.skips = state["diverged_epoch"], state["skips"]
        self.finite_epoch = state["finite_epoch"]
        self.sums, self.steps_logged = state["sums"], state["steps_logged"]
        self.history = state["history"]
        if self.plateau.on:  # the stopped members' loaded weights are their frozen ones
            self.plateau.load_state_dict(state["plateau"])
            self.frozen.hold(self.plateau.stopped)


def train_student(settings: LoopSettings, teacher, student, strategy,
                  val: tuple[torch.Tensor, torch.Tensor] | None
                  ) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """Run a StudentLoop start to finish without checkpoints (for probes and tests); returns
    each member's history rows and selected epoch (the first of selection=both's), its weights
    in the student."""
    loop = StudentLoop(settings, teacher, student, strategy, val)
    loop.run()
    selection = settings.selections[0]
    loop.use(selection)
    return loop.history, loop.selected_epochs(selection)


def build_student(net_cfg, input_shape: list[int] | None, fast_path: str, teacher,
                  rng: Streams):
    """The student population the `student` config `net_cfg` names, sized for the teacher
    (inputs, outputs, a row's shape: `input_shape`, the dataset's, or the teacher's), member k
    initialised from rng's stream k; returns (architecture, population)."""
    arch = architecture.describe(net_cfg, teacher.input_dim, teacher.output_dim,
                                 input_shape or teacher.input_shape)
    return arch, factory.build(arch, rng, fast_path)
