"""Plain image operations behind the view transforms: resize, centre crop, fragment mosaic.

Every function takes either a numpy array (H, W, C) or a torch tensor (C, H, W) and
returns the same kind; values are float in [0, 1] (they are not clipped except after a
bicubic resize, whose overshoot would leave that range).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest', 'area')


def image_size(img):
    """(H, W) of a numpy (H, W, C) array or a torch (C, H, W) tensor."""
    if isinstance(img, torch.Tensor):
        return int(img.shape[-2]), int(img.shape[-1])
    return int(img.shape[0]), int(img.shape[1])


def resize(img, size, interpolation='bilinear'):
    """Resize to ``size = (H, W)``.

    Uses torch's anti-aliased interpolation (like torchvision's Resize) so that strong
    downscaling does not alias; bicubic output is clipped back to [0, 1].
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f'interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}')
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f'resize target must be positive, got {size}')
    if image_size(img) == (out_h, out_w):
        return img
    is_numpy = not isinstance(img, torch.Tensor)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) if is_numpy else img
    antialias = interpolation in ('bilinear', 'bicubic')
    kwargs = {'align_corners': False} if interpolation in ('bilinear', 'bicubic') else {}
    y = F.interpolate(x[None].float(), size=(out_h, out_w), mode=interpolation, antialias=antialias, **kwargs)[0]
    if interpolation == 'bicubic':
        y = y.clamp_(0.0, 1.0)
    if is_numpy:
        return np.ascontiguousarray(y.numpy().transpose(1, 2, 0))
    return y


def scaled_size(height, width, short_side):
    """(H, W) with the shorter side equal to ``short_side``, aspect ratio kept (rounded)."""
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def upsample_to_min(img, min_height, min_width=None, interpolation='bilinear'):
    """Upsample (aspect kept) until H >= min_height and W >= min_width; larger images are returned as they are."""
    min_width = min_height if min_width is None else min_width
    h, w = image_size(img)
    if h >= min_height and w >= min_width:
        return img
    scale = max(min_height / h, min_width / w)
    # ceil so that rounding never lands one pixel short of the minimum
    return resize(img, (max(min_height, math.ceil(h * scale)), max(min_width, math.ceil(w * scale))), interpolation)


def center_crop(img, size, upsample=True):
    """Centre crop of ``size`` (int or (h, w)).

    Top-left corner is ((H - h) // 2, (W - w) // 2). An image smaller than the crop is
    first upsampled bilinearly (aspect kept) when ``upsample`` is True, else an error is raised.
    """
    ch, cw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = image_size(img)
    if h < ch or w < cw:
        if not upsample:
            raise ValueError(f'image of size {h}x{w} is smaller than the crop {ch}x{cw}')
        img = upsample_to_min(img, ch, cw)
        h, w = image_size(img)
    top, left = (h - ch) // 2, (w - cw) // 2
    if isinstance(img, torch.Tensor):
        return img[..., top:top + ch, left:left + cw]
    return img[top:top + ch, left:left + cw]


def fragment_offsets(height, width, grid=12, patch=32, rng=None):
    """Offsets (dy, dx) of each patch inside its cell, as an int array of shape (grid, grid, 2).

    The cell size is (H // grid, W // grid). With ``rng`` (a numpy Generator or the
    ``numpy.random`` module) each offset is drawn uniformly from [0, cell - patch), as
    in training (0 when the cell is exactly one patch). Without ``rng`` the patch sits at
    the centre of its cell: offset (cell - patch) // 2, which is deterministic.
    """
    cell_h, cell_w = height // grid, width // grid
    span_h, span_w = max(cell_h - patch, 0), max(cell_w - patch, 0)
    if rng is None:
        dy = np.full((grid, grid), span_h // 2, dtype=np.int64)
        dx = np.full((grid, grid), span_w // 2, dtype=np.int64)
    else:
        draw = rng.integers if hasattr(rng, 'integers') else rng.randint  # Generator or legacy RandomState
        dy = draw(0, span_h, size=(grid, grid)) if span_h > 0 else np.zeros((grid, grid), np.int64)
        dx = draw(0, span_w, size=(grid, grid)) if span_w > 0 else np.zeros((grid, grid), np.int64)
    return np.stack([dy, dx], axis=-1).astype(np.int64)


def fragment_positions(height, width, grid, patch, offsets):
    """Top-left (y, x) of every patch: cell origin i * (H // grid), clamped to H - patch, plus the offset.

    Returns two int arrays of shape (grid, grid): ys[i, j] and xs[i, j] for row i, column j.
    """
    cell_h, cell_w = height // grid, width // grid
    origin_y = np.minimum(np.arange(grid) * cell_h, height - patch)
    origin_x = np.minimum(np.arange(grid) * cell_w, width - patch)
    ys = np.minimum(origin_y[:, None] + offsets[..., 0], height - patch)
    xs = np.minimum(origin_x[None, :] + offsets[..., 1], width - patch)
    return ys, xs


def fragment_mosaic(img, grid=12, patch=32, offsets=None, rng=None):
    """Grid mini-patch mosaic: one ``patch`` x ``patch`` patch from each cell of a grid x grid split.

    Args:
        img: numpy (H, W, C) or torch (C, H, W), float in [0, 1].
        grid: cells per side (n). patch: patch side in pixels.
        offsets: int array (grid, grid, 2) of (dy, dx) inside each cell; None -> random
            when ``rng`` is given (training), else the cell centres (evaluation).
        rng: numpy Generator or the ``numpy.random`` module, used when offsets is None.

    Returns:
        Mosaic of shape (grid * patch, grid * patch, C) for numpy, (C, grid*patch, grid*patch)
        for torch; patch (i, j) comes from cell row i, column j.

    An image with min(H, W) < grid * patch is first upsampled bilinearly (aspect kept) so
    that its shorter side is grid * patch; the grid is computed on the upsampled size.
    """
    side = grid * patch
    img = upsample_to_min(img, side, side)
    h, w = image_size(img)
    if offsets is None:
        offsets = fragment_offsets(h, w, grid, patch, rng)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.shape != (grid, grid, 2):
        raise ValueError(f'offsets must have shape ({grid}, {grid}, 2), got {offsets.shape}')
    ys, xs = fragment_positions(h, w, grid, patch, offsets)
    steps = np.arange(patch)
    rows = (ys[:, :, None] + steps)[:, :, :, None]  # (g, g, p, 1)
    cols = (xs[:, :, None] + steps)[:, :, None, :]  # (g, g, 1, p)
    if isinstance(img, torch.Tensor):
        tiles = img[:, torch.from_numpy(rows), torch.from_numpy(cols)]  # (C, g, g, p, p)
        return tiles.permute(0, 1, 3, 2, 4).reshape(img.shape[0], side, side)
    tiles = img[rows, cols]  # (g, g, p, p, C)
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3, 4).reshape(side, side, img.shape[2]))
