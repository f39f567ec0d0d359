"""The student loop (Zhou & Chiam 2023, Eq. 6) as a resumable, fault-aware state machine.

For epoch t of E, alpha = alpha(t), and each of n_s steps draws x_g from the strategy and
x_p ~ N(0, I), both of batch size m, and minimises

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
continue bit for bit.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from dfkd_cli.loop.selection import SCORE_COLUMNS, selections
from dfkd_cli.loop.stopping import Frozen, Plateau
from dfkd_cli.nets import mlp, seam
from dfkd_cli.nets.mlp import Snapshot, per_member
from dfkd_cli.nets.optim import make_optimizer
from dfkd_cli.strategies import batch_diagnostics
from dfkd_cli.utils.progress import Progress
from dfkd_cli.utils.rng import Streams


def alpha_horizon(cfg, epochs: int) -> int:
    """H, the epochs over which alpha moves: `alpha.horizon`, or the run's E when null."""
    return cfg.get("horizon") or epochs


def alpha_at(cfg, epoch: int, epochs: int) -> float:
    """alpha(t): decreasing 1 - (t+1)/H (the paper's, with H = E), increasing (t+1)/H, or
    constant; H is `alpha.horizon` (the run's E when null), after which alpha stays at its end."""
    horizon = alpha_horizon(cfg, epochs)
    done = min(epoch + 1, horizon) / horizon
    if cfg.schedule == "decreasing":
        return 1.0 - done
    if cfg.schedule == "increasing":
        return done
    return float(cfg.value)


def alpha_settled(cfg, epoch: int, epochs: int) -> bool:
    """Whether alpha has reached the end of its schedule by epoch t (a constant alpha always
    has): stop=plateau counts plateaus only from there."""
    return cfg.schedule == "constant" or epoch + 1 >= alpha_horizon(cfg, epochs)


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


class StudentLoop:
    """E epochs x n_s steps of L_S for a population; see the module docstring."""

    def __init__(self, cfg, teacher, student, strategy,
                 val: tuple[torch.Tensor, torch.Tensor] | None,
                 fidelity: tuple[torch.Tensor, torch.Tensor] | None = None,
                 project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """`val`: the real validation rows (x, y); `fidelity`: a fixed synthetic set (x, T(x));
        each selection that names one keeps each member's epoch of least RMSE on it.
        `project`: the input domain's projection (None: none); `augment`: what x_g goes
        through before it is labelled (shift=: data/images.py RandomShift; None: nothing)."""
        self.cfg, self.teacher, self.student, self.strategy, self.project = (
            cfg, teacher, student, strategy, project)
        self.augment = augment
        members, device = student.members, student.params[0].device
        self.opt = make_optimizer(cfg.optimizer, student.opt_params,
                                  fast=isinstance(student, mlp.StackedMLP))
        params = student.params
        self.plateau = Plateau(cfg, members, device)
        self.frozen = Frozen(student, self.opt)
        wanted = selections(cfg.selection) + (["fidelity"] if self.plateau.on else [])
        self.sets = {name: rows for name, rows in (("val", val), ("fidelity", fidelity))
                     if name in wanted}
        missing = [name for name, rows in self.sets.items() if rows is None]
        if missing:
            raise ValueError(f"selection={cfg.selection} (or stop=plateau) scores the "
                             f"{' and '.join(missing)} set, and none was given")
        self.best = {name: Snapshot(params) for name in self.sets}
        self.best_loss = {name: torch.full((members,), float("inf"), device=device)
                          for name in self.sets}
        self.best_epoch = {name: torch.full((members,), -1, device=device) for name in self.sets}
        self.finite = Snapshot(params)  # each member's weights at its last finite log point
        self.finite_epoch = torch.full((members,), -1, device=device)  # -1: the untrained start
        self.diverged_epoch = torch.full((members,), -1, device=device)
        self.skips = torch.zeros(members, dtype=torch.long, device=device)
        self.zero = torch.zeros(members, device=device)
        self.sums = {"loss": self.zero.clone(), "loss_g": self.zero.clone(),
                     "loss_p": self.zero.clone()}
        self.steps_logged = 0
        self.epoch = 0  # the next epoch to run
        self.history: list[list[dict[str, Any]]] = [[] for _ in range(members)]
        self.scores: dict[str, torch.Tensor] = {}
        self.prepared = False
        self.prepared_stats: dict[str, torch.Tensor] = {}

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs

    def run(self, should_stop: Callable[[], bool] = lambda: False,
            checkpoint: Callable[[], None] | None = None,
            on_log: Callable[[], None] = lambda: None) -> None:
        """Run epochs until the end, until every member has diverged, or until `should_stop()`
        (checked after every epoch). `checkpoint()` is called every `checkpoint_every` epochs,
        `on_log()` after every history row (the trackers). With stop=plateau it also ends when
        every member has stopped or diverged."""
        cfg, T = self.cfg, self.teacher.module
        if not self.prepared:
            self.prepared_stats = self.strategy.prepare(T)  # joins the first history row
            self.prepared = True
        with Progress(cfg.strategy.name, cfg.epochs, cfg.progress_every, cfg.progress,
                      start=self.epoch, early_stop=self.plateau.on) as progress:
            for epoch in range(self.epoch, cfg.epochs):
                self._epoch(epoch)
                self.epoch = epoch + 1
                progress.update(self.epoch, self.progress_figures)
                if self.epoch % cfg.log_every == 0 or self.done:
                    none_left = self._log(epoch)
                    on_log()
                    if none_left:
                        break
                if checkpoint and cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0:
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
        cfg, T, S, m = self.cfg, self.teacher.module, self.student, self.cfg.batch_size
        alpha = alpha_at(cfg.alpha, epoch, cfg.epochs)
        self.alpha = alpha
        self.diagnostics = self.strategy.update(T, S) if alpha > 0 else {}
        self.x_g = None
        n_g, n_p = (m if alpha > 0 else 0), (m if alpha < 1 else 0)
        weights = row_weights(n_g, n_p, alpha, self.zero.device)
        epoch_g, epoch_p = self.zero.clone(), self.zero.clone()  # summed over the epoch's steps
        for _ in range(cfg.steps_per_epoch):
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
        self.steps_logged += cfg.steps_per_epoch
        self.scores = {}
        for name, (x, y) in self.sets.items():
            with torch.no_grad():
                score = (S(x) - y).pow(2).mean(dim=(1, 2)).sqrt()
            better = score < self.best_loss[name]  # NaN is never better
            self.best_loss[name] = torch.where(better, score, self.best_loss[name])
            self.best_epoch[name] = torch.where(better, epoch, self.best_epoch[name])
            self.best[name].take(better)
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
        if self.cfg.on_nonfinite == "skip":
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
        if not self.plateau.on or not alpha_settled(self.cfg.alpha, epoch, self.cfg.epochs):
            return
        active = ~self.plateau.stopped & (self.diverged_epoch < 0)
        newly = self.plateau.update(self.best_loss["fidelity"], active, epoch)
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

    def finish(self, selection: str) -> list[int]:
        """Put each member's selected weights in the student: the best epoch on the validation
        rows (selection=val) or on the fidelity set (fidelity), or the last finite weights
        (last); returns the selected epochs (-1: the untrained start). With several kept, call
        it for last first: the others overwrite the weights."""
        diverged = self.diverged_epoch >= 0
        if selection in self.best:
            self.best[selection].restore(torch.ones_like(diverged))
            return self.best_epoch[selection].tolist()
        self.finite.restore(diverged)
        last = torch.where(self.plateau.stopped, self.plateau.epoch, self.epoch - 1)
        return torch.where(diverged, self.finite_epoch, last).tolist()

    def status(self) -> list[str]:
        return ["diverged" if e >= 0 else "ok" for e in self.diverged_epoch.tolist()]

    # Resuming: everything the loop's future depends on.

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "prepared": self.prepared,
                "prepared_stats": self.prepared_stats,  # not yet logged when stopped early
                "student": self.student.state_dict(), "optimizer": self.opt.state_dict(),
                "strategy": self.strategy.state_dict(), "rng": self.strategy.rng.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best": {name: snap.kept for name, snap in self.best.items()},
                "best_loss": self.best_loss, "best_epoch": self.best_epoch,
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
        for name, snap in self.best.items():
            for kept, saved in zip(snap.kept, state["best"][name]):
                kept.copy_(saved)
        for kept, saved in zip(self.finite.kept, state["finite"]):
            kept.copy_(saved)
        self.epoch, self.prepared = state["epoch"], state["prepared"]
        self.prepared_stats = state["prepared_stats"]
        self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]
        self.diverged_epoch, self.skips = state["diverged_epoch"], state["skips"]
        self.finite_epoch = state["finite_epoch"]
        self.sums, self.steps_logged = state["sums"], state["steps_logged"]
        self.history = state["history"]
        if self.plateau.on:  # the stopped members' loaded weights are their frozen ones
            self.plateau.load_state_dict(state["plateau"])
            self.frozen.hold(self.plateau.stopped)


def train_student(cfg, teacher, student, strategy,
                  val: tuple[torch.Tensor, torch.Tensor] | None
                  ) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """Run a StudentLoop start to finish without checkpoints (for probes and tests); returns
    each member's history rows and selected epoch (the first of selection=both's)."""
    loop = StudentLoop(cfg, teacher, student, strategy, val)
    loop.run()
    return loop.history, loop.finish(selections(cfg.selection)[0])


def build_student(cfg, teacher, rng: Streams):
    """The student population `cfg.student` names, sized for the teacher (inputs, outputs, a
    row's shape from the dataset or the teacher), member k initialised from rng's stream k;
    returns (architecture, population)."""
    arch = seam.describe(cfg.student, teacher.input_dim, teacher.output_dim,
                             cfg.dataset.input_shape or teacher.input_shape)
    return arch, seam.build(arch, rng, cfg.fast_path)
