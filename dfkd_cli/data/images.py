"""Rows seen as pictures: what the image-synthesis keys (`strategy.tv`, `shift`) act on.

dfkd's inputs are standardised per feature, and for images per pixel, so neighbouring
standardised values of a smooth picture need not be close. `ImageView` maps a batch (K, n, d) of
standardised rows to images (K, n, C, H, W) in raw units divided by one number, the features'
mean sd (a typical pixel moves by about 1), and back: smoothness and translation are measured
and done there, as for pictures.
"""

from __future__ import annotations

import math

import torch

from dfkd_cli.errors import UserError


class ImageView:
    """Each member's standardised rows as (C, H, W) images in raw units over the mean sd."""

    def __init__(self, shape: list[int], means: torch.Tensor, sds: torch.Tensor):
        """`shape` (C, H, W); `means`, `sds`: each member's (K, d) input scales
        (raw = mean + sd * x). A shape that does not hold the d features (a checkpoint's
        recorded input_shape is read from a file) is refused by name."""
        self.shape = tuple(int(s) for s in shape)
        if math.prod(self.shape) != means.shape[1] or min(self.shape) < 1:
            raise UserError(f"input_shape {list(self.shape)} does not hold the rows' "
                            f"{means.shape[1]} features: give dataset.input_shape=[channels, "
                            "height, width] whose product is the number of features")
        self.means, self.sds = means.unsqueeze(1), sds.unsqueeze(1)
        self.unit = sds.mean(dim=1).view(-1, 1, 1)  # (K, 1, 1): the features' mean sd

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """(K, n, d) standardised rows -> (K, n, C, H, W) images in raw units / the mean sd."""
        return ((self.means + self.sds * x) / self.unit).reshape(*x.shape[:2], *self.shape)

    def to_rows(self, images: torch.Tensor) -> torch.Tensor:
        """The inverse of to_images."""
        return (images.flatten(2) * self.unit - self.means) / self.sds


def image_view(shape: list[int] | None, means: torch.Tensor, sds: torch.Tensor
               ) -> ImageView | None:
    """An ImageView for an image-shaped run ((C, H, W)); None for other rows."""
    return ImageView(shape, means, sds) if shape is not None and len(shape) == 3 else None


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """The squared total variation of each image (K, n, C, H, W) -> (K, n): the mean over
    neighbouring pixel pairs (down and right) of their squared difference, the l2 smoothness
    prior of DeepInversion (Yin et al. 2020, Eq. 3's R_TV)."""
    down = (images[..., 1:, :] - images[..., :-1, :]).pow(2).flatten(2)
    right = (images[..., :, 1:] - images[..., :, :-1]).pow(2).flatten(2)
    return torch.cat([down, right], dim=2).mean(dim=2)


def shift_images(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Each image (K, n, C, H, W) moved by its own (rows, cols) pixels ((K, n) integers,
    positive down and right), wrapping around the edges as torch.roll does (DeepInversion's
    jitter, per image)."""
    *_, height, width = images.shape
    i = (torch.arange(height, device=images.device) - rows[..., None]) % height  # (K, n, H)
    j = (torch.arange(width, device=images.device) - cols[..., None]) % width  # (K, n, W)
    out = images.gather(3, i[:, :, None, :, None].expand_as(images))
    return out.gather(4, j[:, :, None, None, :].expand_as(images))


class RandomShift:
    """`shift=s`: each synthetic image x_g moved by its own uniform (rows, cols) in [-s, s]^2
    (drawn from the run's streams) before the teacher labels it, then clamped to each pixel's
    training range (`box`): with per-pixel scales a stroke moved where the training images never
    had ink would otherwise be hundreds of sds from anything the teacher saw."""

    def __init__(self, view: ImageView, pixels: int, rng, box: tuple[torch.Tensor, torch.Tensor]):
        self.view, self.pixels, self.rng = view, int(pixels), rng
        self.low, self.high = box[0].unsqueeze(1), box[1].unsqueeze(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        offsets = self.rng.randint(2 * self.pixels + 1, x.shape[1], 2) - self.pixels
        moved = self.view.to_rows(shift_images(self.view.to_images(x), offsets[..., 0],
                                               offsets[..., 1]))
        return torch.maximum(torch.minimum(moved, self.high), self.low)
