"""What input sizes a CLIP image tower takes, and what to do with images outside them.

A ResNet tower downsamples 32x (stride-2 stem conv, 2x2 average pool, three stride-2 stages,
pooling floors) and its attention pool needs at least one token; a ViT needs one patch. Below
that the forward fails, so smaller images are upscaled (aspect kept, bicubic like ``Resize``)
until both sides reach the minimum. Strips more than ``MAX_ASPECT`` times longer than wide are
refused by name instead: upscaling them would make huge, meaningless inputs.
"""
import weakref

import torch

from uiqa_plugin.data.image_io import ImageReadError
from uiqa_plugin.scoring import MAX_PIXELS  # noqa: F401 (the budget lives where --help reads it without torch)

MAX_ASPECT = 100.0  # longer side / shorter side of images that are scored


_MIN_SIDE = weakref.WeakKeyDictionary()  # visual tower -> smallest side


def _accepts(clip, side):
    x = torch.zeros(1, 3, side, side, device=clip.device, dtype=clip.dtype)
    try:
        with torch.no_grad():
            clip.encode_image(x)
    except RuntimeError:  # "input size smaller than kernel" / "output size is too small"
        return False
    return True


def minimum_input_side(clip, limit=4096):
    """Smallest side S such that the image tower of ``clip`` (a ClipBackbone) encodes S x S images.

    Found by trying sizes on the tower itself (a few forwards of at most 2S x 2S zeros), once per
    tower. Height and width are independent in both tower kinds, so S bounds each side.
    """
    visual = clip.model.visual
    if visual in _MIN_SIDE:
        return _MIN_SIDE[visual]
    high = 1
    while not _accepts(clip, high):  # doubling until one works, then bisection below it
        if high >= limit:
            raise ValueError(f'CLIP image tower accepts no input up to {limit} pixels')
        high *= 2
    low = high // 2  # fails (or 0)
    while high - low > 1:
        mid = (low + high) // 2
        if _accepts(clip, mid):
            high = mid
        else:
            low = mid
    _MIN_SIDE[visual] = high
    return high


def check_aspect(height, width, name, max_aspect=MAX_ASPECT):
    """Raise ImageReadError naming ``name`` when the image is emptier than 1 pixel or too elongated."""
    if min(height, width) < 1:
        raise ImageReadError(f'{name}: image has no pixels ({height}x{width})')
    aspect = max(height, width) / min(height, width)
    if max_aspect is not None and aspect > max_aspect:
        raise ImageReadError(f'{name}: {width}x{height} pixels, aspect ratio {aspect:.0f}:1 is beyond '
                             f'{max_aspect:.0f}:1; not scored')
