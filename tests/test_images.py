"""The image keys of issue 29 (data/images.py): the rows seen as pictures, their total
variation, per-image shifts (`shift=`), and the refusals where the rows are not images."""

from __future__ import annotations

import pytest
import torch
from conftest import make_config

from dfkd_cli.commands.distill import random_shift
from dfkd_cli.data import images
from dfkd_cli.errors import UserError
from dfkd_cli.strategies.registry import build_strategy
from dfkd_cli.teachers.loader import Teacher
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")


def test_image_view_is_raw_units_over_the_mean_sd_and_back():
    means, sds = torch.tensor([[1.0, 2, 3, 4, 5, 6]]), torch.tensor([[1.0, 1, 2, 2, 3, 3]])
    view = images.ImageView([1, 2, 3], means, sds)
    x = torch.randn(1, 5, 6, generator=torch.Generator().manual_seed(0))
    pictures = view.to_images(x)
    assert pictures.shape == (1, 5, 1, 2, 3)
    torch.testing.assert_close(pictures.flatten(2), (means + sds * x) / 2.0)  # mean sd 2
    torch.testing.assert_close(view.to_rows(pictures), x)
    assert images.image_view([1, 6], means, sds) is None  # a 1-D signal is not a picture
    assert images.image_view(None, means, sds) is None
    # a recorded shape that does not hold the features (a crafted checkpoint) is refused
    with pytest.raises(UserError, match=r"input_shape \[1, 2, 2\] does not hold the rows' 6"):
        images.image_view([1, 2, 2], means, sds)


def test_total_variation_is_the_mean_squared_neighbour_difference():
    flat = torch.full((1, 1, 1, 3, 3), 7.0)
    assert float(images.total_variation(flat)) == 0
    ramp = torch.tensor([[0.0, 1, 2], [0, 1, 2], [0, 1, 2]]).view(1, 1, 1, 3, 3)
    # 6 right pairs differ by 1, 6 down pairs by 0
    assert float(images.total_variation(ramp)) == pytest.approx(0.5)
    noisy = torch.randn(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    smooth = torch.nn.functional.avg_pool2d(noisy.view(8, 1, 8, 8), 3, 1, 1).view_as(noisy)
    assert (images.total_variation(smooth) < images.total_variation(noisy)).all()


def test_shift_images_rolls_each_image_by_its_own_offset():
    pictures = torch.randn(2, 3, 2, 5, 6, generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([[0, 1, -2], [3, -1, 0]])
    cols = torch.tensor([[2, 0, -1], [-3, 5, 0]])
    moved = images.shift_images(pictures, rows, cols)
    for k in range(2):
        for i in range(3):
            expected = torch.roll(pictures[k, i], (int(rows[k, i]), int(cols[k, i])), (1, 2))
            assert torch.equal(moved[k, i], expected)


def test_random_shift_moves_by_at_most_s_pixels_and_stays_in_the_pixel_box():
    d, s = 25, 2
    view = images.ImageView([1, 5, 5], torch.zeros(1, d), torch.ones(1, d))
    x = torch.randn(1, 200, d, generator=torch.Generator().manual_seed(3))
    wide = (torch.full((1, d), -100.0), torch.full((1, d), 100.0))
    moved = images.RandomShift(view, s, Streams([0], CPU), wide)(x)
    pictures, shifted = view.to_images(x)[0], view.to_images(moved)[0]
    offsets = set()
    for i in range(200):
        found = [(a, b) for a in range(-s, s + 1) for b in range(-s, s + 1)
                 if torch.equal(torch.roll(pictures[i], (a, b), (1, 2)), shifted[i])]
        assert found, f"image {i} is no shift of at most {s} pixels"
        offsets.add(found[0])
    assert len(offsets) == (2 * s + 1) ** 2  # every offset occurs
    tight = (torch.full((1, d), -0.5), torch.full((1, d), 0.5))
    clamped = images.RandomShift(view, s, Streams([0], CPU), tight)(x)
    assert float(clamped.abs().max()) <= 0.5


def flat_teacher(box=True) -> Teacher:
    net = torch.nn.Linear(6, 1)
    lows = -torch.ones(1, 6)
    return Teacher(net, 6, (lows, -lows) if box else None, ["t.pt"])


@pytest.mark.parametrize("keys,named", [(["strategy.tv=1"], "strategy.tv"),
                                        (["strategy=generator", "strategy.arch=conv"],
                                         "strategy.arch=conv")])
def test_image_keys_are_refused_on_rows_that_are_not_images(keys, named):
    cfg = make_config("distill", keys)
    with pytest.raises(UserError, match=rf"{named} needs image-shaped inputs.*input_shape"):
        build_strategy(cfg.strategy, flat_teacher(), Streams([0], CPU))


def test_shift_is_refused_without_images_or_a_pixel_box():
    view = images.ImageView([1, 2, 3], torch.zeros(1, 6), torch.ones(1, 6))
    assert random_shift(0, None, flat_teacher(), Streams([0], CPU)) is None
    with pytest.raises(UserError, match=r"shift=2 moves synthetic images.*input_shape"):
        random_shift(2, None, flat_teacher(), Streams([0], CPU))
    with pytest.raises(UserError, match=r"shift=2 clamps .* teacher t.pt records none"):
        random_shift(2, view, flat_teacher(box=False), Streams([0], CPU))
    assert isinstance(random_shift(2, view, flat_teacher(), Streams([0], CPU)),
                      images.RandomShift)
