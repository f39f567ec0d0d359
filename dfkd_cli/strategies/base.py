"""The strategy seam: every synthetic-data strategy answers `update` and `sample`.

The student loop (distill.py) never asks which strategy it holds. Every tensor carries a leading
population axis K (K = 1 for a single run): inputs are (K, n, d) in the teacher's standardised
input space, where N(0, I) is the prior; teacher and student map (K, n, d) -> (K, n, out).
Shape after zju-vipa/DataFree's BaseSynthesis.

The student fits `labels(teacher, x, n_g)` on each batch: the teacher's outputs for every
data-free strategy. The one strategy that is not data-free (`real_rows`, the real-data
reference) draws the split's training rows, which `rows` hands it, and may label them with their
real targets instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from omegaconf import MISSING, OmegaConf

from dfkd_cli.data.datasets import Box, Rows
from dfkd_cli.data.images import ImageView
from dfkd_cli.errors import UserError
from dfkd_cli.nets.seam import Net
from dfkd_cli.utils.rng import Streams


@dataclass
class StrategyConfig:
    """Common part of every strategy's schema; each strategy adds its hyper-parameters."""

    name: str = MISSING  # the strategy, set by strategy=<name>


class Strategy:
    """Base class: no state, N(0, I) prior. Subclasses override what they change."""

    Config: type = StrategyConfig
    needs_box = False  # samples in the teacher's feature box: a box-less teacher fails at set-up
    needs_gradients = False  # uses dT/dx or dT/dG: a teacher without gradients is refused
    needs_rows = False  # draws the split's training rows: dataset=none is refused
    # the run's prior (prior=, dfkd_cli/data/domains.py Prior), set by build_strategy; None: N(0, I)
    sampler: Callable[[int], torch.Tensor] | None = None
    # the input domain's projection (domain=on: dfkd_cli/data/domains.py Projection), set by
    # build_strategy; None: none. The student loop projects every batch it labels; a strategy
    # that scores its own candidates with the teacher (evolution) projects them first
    project: Callable[[torch.Tensor], torch.Tensor] | None = None
    # the teacher's output scaler, raw = y_mean + y_sd * standardised, (K, k) each; build_strategy
    # sets it (for targets given in the teacher's raw units)
    y_scale: tuple[torch.Tensor, torch.Tensor] | None = None

    def __init__(self, cfg: Any, input_dim: int, box: Box | None, rng: Streams,
                 rows: Rows | None = None, image: ImageView | None = None):
        # a plain dataclass: reading a DictConfig attribute costs microseconds, in the hot loop
        self.cfg = OmegaConf.to_object(cfg) if OmegaConf.is_config(cfg) else cfg
        self.input_dim = input_dim
        self.box = box
        self.rng = rng
        self.rows = rows
        self.image = image  # the rows as pictures, for a strategy that needs_image
        self.start: torch.Tensor | None = None  # starting points of the last batch, if any
        if self.needs_box:
            self.need_box()  # fail before any training
        if self.needs_rows:
            self.need_rows()

    @classmethod
    def label(cls, cfg: Any) -> str:
        """The strategy's name in an arm's derived label (labels.arm_label)."""
        return cfg.name

    @classmethod
    def checks(cls, cfg: Any) -> Iterable[tuple[str, bool, str]]:
        """(key, ok, what is valid) for range checks on this strategy's config."""
        return ()

    @classmethod
    def needs_image(cls, cfg: Any) -> str | None:
        """The setting (e.g. "arch=conv") that makes this config see its rows as images
        (`self.image`, data/images.py), or None: build_strategy refuses it on other rows."""
        return None

    def prior(self, n: int) -> torch.Tensor:
        """x_p from the run's prior (N(0, I) unless prior= says otherwise), shape (K, n, d)."""
        return self.sampler(n) if self.sampler else self.rng.randn(n, self.input_dim)

    def need_box(self) -> Box:
        """The teacher's per-feature box, or a UserError when the teacher carries none."""
        if self.box is None:
            raise UserError(f"strategy={self.cfg.name} needs the teacher's per-feature box (the "
                            "input_spec of a dfkd teacher checkpoint); this teacher has none "
                            "(a TorchScript teacher?)")
        return self.box

    def need_rows(self) -> Rows:
        """The split's training rows, or a UserError when the run has none (dataset=none)."""
        if self.rows is None:
            raise no_rows(self.cfg.name)
        return self.rows

    def in_box(self, u: torch.Tensor) -> torch.Tensor:
        """Map u in [0, 1)^d, shape (K, n, d), affinely onto each member's feature box."""
        low, high = self.need_box()
        return torch.addcmul(low.unsqueeze(1), u, (high - low).unsqueeze(1))

    def clamp_to_box(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, n, d) clamped coordinate-wise to each member's feature box."""
        low, high = self.need_box()
        return torch.maximum(torch.minimum(x, high.unsqueeze(1)), low.unsqueeze(1))

    def prepare(self, teacher: Net) -> dict[str, torch.Tensor]:
        """Once, before the student's first step: fit anything that needs only the teacher (a
        data-impression generator); return diagnostics as (K,) tensors."""
        return {}

    def update(self, teacher: Net, student: Net) -> dict[str, torch.Tensor]:
        """Once per epoch: adapt internal state (a generator's weights); return diagnostics as
        (K,) tensors (read only at the log interval, so no host sync here)."""
        return {}

    def sample(self, teacher: Net, student: Net, n: int) -> torch.Tensor:
        """n synthetic inputs x_g per member, shape (K, n, d)."""
        raise NotImplementedError

    def labels(self, teacher: Net, x: torch.Tensor, n_g: int) -> torch.Tensor:
        """What the student fits on a batch x = [x_g; x_p] (K, n, d) whose first n_g rows are
        this strategy's: the teacher's outputs T(x) (Zhou & Chiam 2023, Eq. 6)."""
        return teacher(x)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def no_rows(name: str) -> UserError:
    """The refusal of a strategy that needs training rows in a run without a dataset."""
    return UserError(f"strategy={name} trains on the dataset's training rows, and dataset=none "
                     "has none; give a dataset, or pick a data-free strategy")


BOX_SLACK = 1e-5  # standardised units: far below any real excursion, far above float32 rounding


@torch.no_grad()
def per_sample(teacher: Net, student: Net, x: torch.Tensor, start: torch.Tensor | None,
               box: Box | None) -> dict[str, torch.Tensor]:
    """What each sample of a batch x (K, n, d) carries, (K, n) tensors: "gap" (T - S)^2 summed
    over outputs, "norm" ||x||, "dist" the L-infinity distance from its start (with a start),
    "outside" whether it leaves the feature box by more than BOX_SLACK (with a box: a sample the
    input domain clipped to its raw bounds lands on the box's edge only up to float rounding);
    and "teacher" T(x) (K, n, k)."""
    t = teacher(x)
    out = {"teacher": t, "gap": (t - student(x)).pow(2).sum(dim=2), "norm": x.norm(dim=2)}
    if start is not None:
        out["dist"] = (x - start).abs().amax(dim=2)
    if box is not None:
        low, high = box[0].unsqueeze(1), box[1].unsqueeze(1)
        out["outside"] = ((x < low - BOX_SLACK) | (x > high + BOX_SLACK)).any(dim=2)
    return out


@torch.no_grad()
def batch_diagnostics(teacher: Net, student: Net, x: torch.Tensor, start: torch.Tensor | None,
                      box: Box | None) -> dict[str, torch.Tensor]:
    """What a synthetic batch looks like, per member ((K,) tensors): the (T - S)^2 it carries,
    its norm, its L-infinity distance from its start and the fraction outside the feature box."""
    s = per_sample(teacher, student, x, start, box)
    stats = {"gap_mean": s["gap"].mean(1), "gap_max": s["gap"].amax(1),
             "x_norm": s["norm"].mean(1)}
    if "dist" in s:
        stats["start_dist_mean"] = s["dist"].mean(1)
        stats["start_dist_max"] = s["dist"].amax(1)
    if "outside" in s:
        stats["outside_box"] = s["outside"].float().mean(1)
    return stats
