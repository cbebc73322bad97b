"""What image tensors a zero-shot CLIP-IQA metric takes: dtype, value range and smallest size.

``create_metric`` attaches ``ImageInputContract`` to its model as a forward pre-hook, so that
``metric(images)`` scores a tensor the way ``uiqa-score`` scores the same image from a file:

- uint8 (N, 3, H, W) in [0, 255] becomes float32 ``x / 255``, bit for bit the values of the decoded file;
- float images are divided by ``data_range`` (1.0: images in [0, 1]; 255.0 for [0, 255]) and must lie in
  [0, data_range], give or take one 8-bit step (rounding, dithering): anything else is another scale (or
  unclamped network output) and is refused by name instead of being scored as if it were a photo. Images
  that ``score_paths`` / ``uiqa-score`` decoded are already in [0, 1] (``device_input.converted_inputs``):
  ``data_range`` does not apply to them;
- images with a side below the smallest the CLIP image tower takes are upscaled (aspect kept, bicubic,
  clipped to [0, 1]) with the same function and minimum as ``uiqa-score``.
"""
import torch

from uiqa_plugin.data.device_input import inputs_converted
from uiqa_plugin.data.image_ops import upsample_to_min
from uiqa_plugin.scoring.input_limits import minimum_input_side


def to_unit_range(images, data_range=1.0, where='images'):
    """uint8 or float (N, 3, H, W) -> float in [0, 1] (give or take 1/255); ValueError for floats outside
    [0, data_range] by more than one 8-bit step."""
    if images.dtype == torch.uint8:
        # a float32 tensor divisor: the exact IEEE quotient the file path (DeviceInput) computes
        return images.float().div_(torch.full((1,), 255.0, device=images.device))
    if not images.is_floating_point():
        raise TypeError(f'{where}: expected uint8 or float images, got {images.dtype}')
    if images.numel():
        with torch.no_grad():
            low, high = (float(v) for v in torch.aminmax(images.detach()))
        step = data_range / 255  # rounding and dithering may leave [0, data_range] by a fraction of an 8-bit step
        if low < -step or high > data_range + step:
            raise ValueError(f'{where}: values span [{low:.4g}, {high:.4g}], outside [0, {data_range:g}] '
                             f'(data_range={data_range:g}); give data_range=255 for images in [0, 255], pass uint8 '
                             'tensors, or clamp the images first')
    if data_range == 1:
        return images
    return images / torch.full((1,), data_range, dtype=images.dtype, device=images.device)


def upscale_to_min_side(images, min_side):
    """(N, 3, H, W) in [0, 1] -> every image upscaled as uiqa-score does until both sides reach ``min_side``."""
    if min(images.shape[-2:]) >= min_side:
        return images
    return torch.stack([upsample_to_min(image, min_side, interpolation='bicubic') for image in images])


class ImageInputContract:
    """Forward pre-hook of a CLIP-IQA module that takes RGB in [0, 1] (``input_normalized`` False).

    Applies ``to_unit_range`` and ``upscale_to_min_side`` to the images (a tensor, or the tensors of a
    dict of named views) before ``forward``. A module that takes CLIP-normalized input is left alone
    except for uint8, which cannot be normalized input and is refused.
    """

    def __init__(self, data_range=1.0):
        data_range = float(data_range)
        if not data_range > 0:
            raise ValueError(f'data_range: must be positive (the white level of the images), got {data_range}')
        self.data_range = data_range

    def _convert(self, module, images):
        if not torch.is_tensor(images):
            return images
        if getattr(module, 'input_normalized', False):
            if images.dtype == torch.uint8:
                raise TypeError('uint8 images reach a metric built with input_normalized=True (it takes '
                                'CLIP-normalized float input): build it without input_normalized to pass uint8')
            return images
        images = to_unit_range(images, 1.0 if inputs_converted() else self.data_range)
        return upscale_to_min_side(images, minimum_input_side(module.clip))

    def __call__(self, module, args):
        if not args:
            return None
        images = args[0]
        if isinstance(images, dict):
            images = {name: self._convert(module, view) for name, view in images.items()}
        else:
            images = self._convert(module, images)
        return (images,) + tuple(args[1:])
