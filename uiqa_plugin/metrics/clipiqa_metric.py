"""Per-image CLIP-IQA metrics in BasicSR's form, for the validation and test runs of restoration models.

BasicSR's SRModel (and every model built like it) calls each ``val.metrics`` entry once per
image as ``fn(img=SR, img2=GT, **options)``: ``img`` is the network output converted by
``tensor2img``, a BGR ``uint8`` (H, W, 3) array, and the values are averaged over the set.
PSNR/SSIM need ``img2``; these metrics are no-reference and ignore it::

    val:
      metrics:
        psnr: {type: calculate_psnr, crop_border: 4, test_y_channel: false}
        clipiqa: {type: calculate_clipiqa, attributes: quality, clip_model: RN50, clip_pretrained: openai}
        uiqa: {type: calculate_uiqa_checkpoint, checkpoint: experiments/x/models/net_g_best.pth}

Image handling follows BasicSR's own metrics (``calculate_psnr``): ``input_order`` 'HWC' or
'CHW' (a 2-D array is one grey channel), ``crop_border`` pixels removed from each edge, pixel
values in [0, 255] for uint8 and float arrays (``max_value`` overrides; 65535 for uint16).
Channels are BGR as BasicSR writes them (``channel_order: RGB`` for arrays from elsewhere).
``test_y_channel: true`` scores the BT.601 luma Y of BasicSR's ``to_y_channel`` (in [16, 235]/255),
replicated to three channels because CLIP only takes colour images; a grey input is
replicated the same way.

Models are built once per process, options and device (``_MODELS``): a validation over
100 images builds CLIP once, and the shared frozen CLIP of ``load_clip`` is reused by every
metric on the same weights.
"""
import threading

import numpy as np
import torch

from basicsr.utils.registry import METRIC_REGISTRY

__all__ = ['calculate_clipiqa', 'calculate_uiqa_checkpoint', 'image_to_rgb', 'clear_model_cache']

_MODELS = {}
_LOCK = threading.Lock()


def _freeze(value):
    """A hashable form of an option value (lists and dicts from YAML)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _device(device):
    from uiqa_plugin.options import check_device
    return torch.device(check_device(device or ('cuda' if torch.cuda.is_available() else 'cpu'), 'device'))


def cached_model(kind, build, device, **options):
    """The (model, pipeline) pair for ``kind`` and ``options`` on ``device``, built on first use.

    build(device, **options) -> (model in eval mode on device, view pipeline without its loader).
    The lock makes two threads that ask at once share one build.
    """
    key = (kind, str(device), _freeze(options))
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = build(device, **options)
        return _MODELS[key]


def clear_model_cache():
    """Forget the built metric models (tests; frees memory)."""
    with _LOCK:
        _MODELS.clear()


def image_to_rgb(img, crop_border=0, input_order='HWC', test_y_channel=False, channel_order='BGR', max_value=None):
    """BasicSR's per-image input -> RGB float32 (H, W, 3) in [0, 1], the way its own metrics read it.

    img: (H, W, C), (C, H, W) or (H, W) ndarray (or tensor) with C in {1, 3}; uint8, uint16 or float.
    """
    from basicsr.metrics.metric_util import reorder_image, to_y_channel
    if torch.is_tensor(img):
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if input_order not in ('HWC', 'CHW'):
        raise ValueError(f"input_order: expected 'HWC' or 'CHW', got {input_order!r}")
    if channel_order not in ('BGR', 'RGB'):
        raise ValueError(f"channel_order: expected 'BGR' or 'RGB', got {channel_order!r}")
    img = reorder_image(img, input_order=input_order)  # -> (H, W, C)
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f'expected a grey or 3-channel image, got shape {img.shape} (input_order {input_order})')
    if crop_border:
        if 2 * crop_border >= min(img.shape[:2]):
            raise ValueError(f'crop_border {crop_border} removes the whole {img.shape[0]}x{img.shape[1]} image')
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    if max_value is None:
        max_value = 65535.0 if img.dtype == np.uint16 else 255.0
    img = img.astype(np.float32) * np.float32(255.0 / max_value)  # BasicSR's metrics work in [0, 255]
    if img.shape[2] == 3 and channel_order == 'RGB':
        img = img[..., ::-1]  # to_y_channel expects BGR
    if test_y_channel and img.shape[2] == 3:
        img = to_y_channel(img)  # (H, W, 1) in [16, 235]
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img / 255.0, 3, axis=2).clip(0, 1), dtype=np.float32)
    return np.ascontiguousarray((img[..., ::-1] / 255.0).clip(0, 1), dtype=np.float32)  # BGR -> RGB


def _reject_unknown(name, kwargs):
    # BasicSR passes the whole option dict: 'better' is its own key, anything else is a typo
    unknown = sorted(k for k in kwargs if k != 'better')
    if unknown:
        raise TypeError(f'{name}: unexpected option(s) {unknown}; see help(uiqa_plugin.metrics.clipiqa_metric.{name})')


def _loader_free_pipeline(model):
    """The model's evaluation views (api.view_pipeline) without the file reader: we hold the pixels."""
    from uiqa_plugin.api import view_pipeline
    from uiqa_plugin.data.transforms import Compose, LoadImage
    pipeline = view_pipeline(model)
    if not pipeline.transforms or not isinstance(pipeline.transforms[0], LoadImage):
        raise RuntimeError(f'expected the view pipeline to start with LoadImage, got {pipeline!r}')
    return Compose(pipeline.transforms[1:])


@torch.no_grad()
def _score(model, pipeline, device, rgb, column=0):
    sample = pipeline({'key': 'image', 'path': 'image', 'target': [], 'views': {'image': rgb}})
    views = list(getattr(model, 'views', ['image']))
    inputs = {v: sample[v][None].to(device) for v in views}
    out = model(inputs if len(views) > 1 else inputs[views[0]])
    return float(out[0, column])


def _build_clipiqa(device, **options):
    from uiqa_plugin.api import create_metric
    model = create_metric(device=device, **options)
    if len(model.attribute_names) != 1:
        raise ValueError(f'calculate_clipiqa: attributes {options.get("attributes")!r} give '
                         f'{len(model.attribute_names)} scores {model.attribute_names}; BasicSR averages one number '
                         'per metric: add one val.metrics entry per attribute')
    return model, _loader_free_pipeline(model)


@METRIC_REGISTRY.register()
def calculate_clipiqa(img, img2=None, crop_border=0, input_order='HWC', test_y_channel=False, attributes='quality',
                      clip_model='RN50', clip_pretrained='openai', keep_pos_embed=False, quick_gelu=None,
                      ensemble='mean_prob', channel_order='BGR', max_value=None, device=None, **kwargs):
    """Zero-shot CLIP-IQA of one image (no reference: ``img2`` is ignored), a float in [0, 1].

    Args:
        img: BasicSR's image, (H, W, 3) BGR uint8 (see the module docstring for other forms).
        crop_border, input_order, test_y_channel: as in BasicSR's ``calculate_psnr``; Y is
            replicated to three channels.
        attributes: ONE attribute (name or ``"positive|negative"`` pair); one metric entry per attribute.
        clip_model, clip_pretrained, keep_pos_embed, quick_gelu, ensemble: as ``CLIPIQA``.
        channel_order: 'BGR' (BasicSR) or 'RGB'. max_value: white level (default 255; 65535 for uint16).
        device: where CLIP runs (default cuda if available); kwargs (``better``...) are ignored.
    """
    _reject_unknown('calculate_clipiqa', kwargs)
    device = _device(device)
    model, pipeline = cached_model('clipiqa', _build_clipiqa, device, attributes=attributes, clip_model=clip_model,
                                   clip_pretrained=clip_pretrained, keep_pos_embed=keep_pos_embed,
                                   quick_gelu=quick_gelu, ensemble=ensemble)
    rgb = image_to_rgb(img, crop_border, input_order, test_y_channel, channel_order, max_value)
    return _score(model, pipeline, device, rgb)


def _build_checkpoint_model(device, checkpoint, clip_model=None, clip_pretrained=None):
    from uiqa_plugin.api import load_trained_model
    model = load_trained_model(checkpoint, device=device, clip_model=clip_model, clip_pretrained=clip_pretrained)
    return model, _loader_free_pipeline(model)


@METRIC_REGISTRY.register()
def calculate_uiqa_checkpoint(img, img2=None, checkpoint=None, crop_border=0, input_order='HWC', test_y_channel=False,
                              output=0, clip_model=None, clip_pretrained=None, channel_order='BGR', max_value=None,
                              device=None, **kwargs):
    """Score of one image by a trained CLIP-IQA+ / CLIP-UIQA checkpoint (ours, see ``uiqa_plugin.api``).

    The checkpoint's own views are built (image, fragment mosaic, centre patch) with the
    view options it was trained with. ``output``: which column of the model's output (an
    attribute name or an index; default the first). ``clip_model`` / ``clip_pretrained``
    override the CLIP named in the checkpoint (e.g. a local weight file). Other arguments
    as ``calculate_clipiqa``.
    """
    _reject_unknown('calculate_uiqa_checkpoint', kwargs)
    if not checkpoint:
        raise ValueError('calculate_uiqa_checkpoint: give checkpoint: PATH (a net_g_*.pth of IQAModel)')
    device = _device(device)
    model, pipeline = cached_model('checkpoint', _build_checkpoint_model, device, checkpoint=checkpoint,
                                   clip_model=clip_model, clip_pretrained=clip_pretrained)
    from uiqa_plugin.api import output_names
    names = output_names(model)
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f'calculate_uiqa_checkpoint: output {output!r} is not one of {names}')
        output = names.index(output)
    elif not 0 <= output < len(names):
        raise ValueError(f'calculate_uiqa_checkpoint: output {output} out of range for outputs {names}')
    rgb = image_to_rgb(img, crop_border, input_order, test_y_channel, channel_order, max_value)
    return _score(model, pipeline, device, rgb, column=output)


# What option validation accepts for these metrics besides their arguments: BasicSR's own keys.
for _fn in (calculate_clipiqa, calculate_uiqa_checkpoint):
    _fn.per_image = True  # called once per image by SRModel-like models, never on a whole set
    _fn.extra_option_keys = ('better',)
