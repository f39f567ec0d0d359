"""`stop=plateau`: a data-free stopping rule, member by member.

At every log point each member's best RMSE so far on the fixed synthetic set (the one
selection=fidelity scores; stop=plateau draws it whatever the selection) is compared with the
value at its last counted improvement: it counts when it is below that value times
(1 - stop_tolerance). A member that has gone `stop_patience` log points without one stops
there (`stopped_epoch`, reason `plateau`); `epochs` is the cap (reason `cap`). Log points count
only once alpha has settled (after `alpha.horizon` epochs; never before the cap when alpha
moves over the whole run): while alpha still falls, the fidelity improves in steps with long
flats between them, and a rule that stopped in one of them lost up to 9.5% (docs/results.md,
"Stopping without data"). A member that stops is the uncapped run's member up to there.

A stopped member's weights and optimiser state stay frozen while the others train (restored
after every step from a copy taken when the set of stopped members changed: tensor ops on
per-member flags, no host sync), so a population ends as its members run alone. Everything the
rule's future depends on is in `state_dict()`; the frozen copy is rebuilt from the loaded
weights, which are the frozen ones for every stopped member.
"""

from __future__ import annotations

from typing import Any

import torch

from dfkd_cli.loop.settings import StopRule
from dfkd_cli.nets.mlp import per_member

REASONS = ("plateau", "cap")  # stop_reason of a member that ran; diverged members have none


class Plateau:
    """The per-member plateau counters of stop=plateau (inert when stop=off)."""

    def __init__(self, rule: StopRule, members: int, device: torch.device):
        self.on = rule.on
        self.patience = rule.patience
        self.tolerance = rule.tolerance
        self.best = torch.full((members,), float("inf"), device=device)
        self.wait = torch.zeros(members, dtype=torch.long, device=device)
        self.epoch = torch.full((members,), -1, dtype=torch.long, device=device)  # -1: running

    @property
    def stopped(self) -> torch.Tensor:
        return self.epoch >= 0

    @torch.no_grad()
    def update(self, score: torch.Tensor, active: torch.Tensor, epoch: int) -> torch.Tensor:
        """One log point: `score` each member's best fidelity RMSE so far, `active` the members
        still training. Returns the members that stop here."""
        improved = score < self.best * (1 - self.tolerance)  # NaN never improves
        self.best = torch.where(active & improved, score, self.best)
        self.wait = torch.where(active, torch.where(improved, 0, self.wait + 1), self.wait)
        newly = active & (self.wait >= self.patience)
        self.epoch = torch.where(newly, epoch, self.epoch)
        return newly

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"best": self.best, "wait": self.wait, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.best, self.wait, self.epoch = state["best"], state["wait"], state["epoch"]


class Frozen:
    """Holds the stopped members' weights and optimiser state still: `hold(flags)` copies the
    current values (the stopped members' are already their frozen ones), `apply()` after every
    optimiser step puts them back for the flagged members."""

    def __init__(self, student, opt: torch.optim.Optimizer):
        self.student, self.opt = student, opt
        self.flags: torch.Tensor | None = None
        self.tensors: list[tuple[torch.Tensor, torch.Tensor, int | None]] = []

    def hold(self, flags: torch.Tensor) -> None:
        """Freeze the flagged members from now on (none flagged: nothing to do per step)."""
        if not bool(flags.any()):
            self.flags, self.tensors = None, []
            return
        self.flags = flags.clone()
        owners = self.student.owners
        found = [(p, None) for p in self.student.params]
        for i, p in enumerate(self.student.opt_params):
            for value in self.opt.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    found.append((value, None if owners is None else owners[i]))
        self.tensors = [(t, t.detach().clone(), k) for t, k in found]

    @torch.no_grad()
    def apply(self) -> None:
        if self.flags is None:
            return
        for current, kept, owner in self.tensors:
            flag = per_member(self.flags, kept) if owner is None else self.flags[owner]
            current.copy_(torch.where(flag, kept, current))


def reasons(stopped_epoch: list[int], diverged_epoch: list[int], last: int, interrupted: bool,
            on: bool) -> list[dict[str, Any]]:
    """The metrics columns `stopped_epoch` (the member's last epoch: where it stopped, or
    `last`, the cap's) and `stop_reason` (plateau | cap) of each member; empty when stop=off,
    for a diverged member, and when the run was interrupted (it has not ended)."""
    if not on or interrupted:
        return [{"stopped_epoch": None, "stop_reason": None} for _ in stopped_epoch]
    return [{"stopped_epoch": None if d >= 0 else (s if s >= 0 else last),
             "stop_reason": None if d >= 0 else ("plateau" if s >= 0 else "cap")}
            for s, d in zip(stopped_epoch, diverged_epoch)]
