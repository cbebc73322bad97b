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

Images are turned into the model's views as ``uiqa-score`` turns a file into them
(``uiqa_plugin.scoring.loader``): an output whose side is below the smallest the CLIP image
tower takes (after ``crop_border``) is upscaled, aspect kept, instead of failing.

Models are built once per process, options and device (``_MODELS``): a validation over
100 images builds CLIP once, and the shared frozen CLIP of ``load_clip`` is reused by every
metric on the same weights. The image-tower features of the last few images are kept
(``tower_cache``): N ``calculate_clipiqa`` entries on one CLIP cost one tower pass per image.
"""
import threading

import numpy as np
import torch

from basicsr.utils.registry import METRIC_REGISTRY
from uiqa_plugin.api import create_metric, load_trained_model, output_names
from uiqa_plugin.data.device_input import DeviceInput
from uiqa_plugin.data.transforms import evaluation_transform_specs
from uiqa_plugin.devices import check_device, default_device
from uiqa_plugin.data.image_ops import upsample_to_min
from uiqa_plugin.metrics.tower_cache import TowerFeatureCache
from uiqa_plugin.scoring.loader import ScoreImages, model_minimum_side

__all__ = ['calculate_clipiqa', 'calculate_uiqa_checkpoint', 'image_to_rgb', 'clear_model_cache']

_MODELS = {}
_LOCK = threading.Lock()
_TOWER_FEATURES = TowerFeatureCache(size=16)  # a handful of images: BasicSR calls the entries of one image in a row


def _freeze(value):
    """A hashable form of an option value (lists and dicts from YAML)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _device(device):
    return torch.device(check_device(device or default_device(), 'device'))


def cached_model(kind, build, device, **options):
    """The (model, views) pair for ``kind`` and ``options`` on ``device``, built on first use.

    build(device, **options) -> (model in eval mode on device, ``ArrayViews`` of the model).
    The lock makes two threads that ask at once share one build.
    """
    key = (kind, str(device), _freeze(options))
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = build(device, **options)
        return _MODELS[key]


def clear_model_cache():
    """Forget the built metric models and cached image features (tests; frees memory)."""
    with _LOCK:
        _MODELS.clear()
    _TOWER_FEATURES.clear()


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


class ArrayViews:
    """An RGB float image in memory -> the model's input views, built as uiqa-score builds them from a file.

    The same evaluation transforms (``data.transforms.evaluation_transform_specs``, without the file reader),
    the same upscaling of views below the CLIP image tower's minimum side, the same normalization
    on the device (``DeviceInput``) as ``scoring.loader.iter_scores``.
    """

    def __init__(self, model, device):
        specs = evaluation_transform_specs(model)
        # ScoreImages parses the chain (host transforms, view names) exactly as uiqa-score does
        self.host = ScoreImages([], min_side=model_minimum_side(model), specs=specs)
        normalize = next((s for s in specs if s.get('type') == 'Normalize'), {})
        self.to_input = DeviceInput(device, normalize.get('mean'), normalize.get('std'))
        self.device = device

    @property
    def names(self):
        return self.host.names

    def pixels(self, rgb):
        """rgb: float32 (H, W, 3) in [0, 1] -> {view: float32 (h, w, 3) in [0, 1]}, upscaled where too small."""
        sample = {'key': 'image', 'path': 'image', 'target': [], 'views': {'image': rgb}}
        views = self.host.transforms(sample)['views']
        return {name: upsample_to_min(views[name], self.host.min_side, interpolation='bicubic')
                for name in self.host.names}

    def to_model(self, view):
        """One view from ``pixels`` -> the model's (1, 3, h, w) float32 input on the device."""
        x = torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32))[None]
        return self.to_input.convert(x.to(self.device))


@torch.no_grad()
def _score(model, views, rgb, column=0):
    pixels = views.pixels(rgb)
    inputs = {name: views.to_model(view) for name, view in pixels.items()}
    out = model(inputs if len(inputs) > 1 else inputs[views.names[0]])
    return float(out[0, column])


@torch.no_grad()
def _score_zero_shot(model, views, rgb):
    """CLIPIQA's forward split at the image features, which every CLIP-IQA entry on this tower shares."""
    image = views.pixels(rgb)['image']
    features = _TOWER_FEATURES.features(model, image, lambda: model.encode_images(views.to_model(image)))
    return float(model.scores_from_features(features)[0, 0])


def _build_clipiqa(device, **options):
    model = create_metric(device=device, **options)
    if len(model.attribute_names) != 1:
        raise ValueError(f'calculate_clipiqa: attributes {options.get("attributes")!r} give '
                         f'{len(model.attribute_names)} scores {model.attribute_names}; BasicSR averages one number '
                         'per metric: add one val.metrics entry per attribute')
    return model, ArrayViews(model, device)


@METRIC_REGISTRY.register()
def calculate_clipiqa(img, img2=None, crop_border=0, input_order='HWC', test_y_channel=False, attributes='quality',
                      clip_model='RN50', clip_pretrained='openai', keep_pos_embed=False, quick_gelu=None,
                      ensemble='mean_prob', precision='fp32', channel_order='BGR', max_value=None, device=None,
                      **kwargs):
    """Zero-shot CLIP-IQA of one image (no reference: ``img2`` is ignored), a float in [0, 1].

    Args:
        img: BasicSR's image, (H, W, 3) BGR uint8 (see the module docstring for other forms).
        crop_border, input_order, test_y_channel: as in BasicSR's ``calculate_psnr``; Y is
            replicated to three channels.
        attributes: ONE attribute (name or ``"positive|negative"`` pair); one metric entry per attribute.
            Entries that differ only in attributes or ``ensemble`` share one image-tower pass per image.
        clip_model, clip_pretrained, keep_pos_embed, quick_gelu: as ``CLIPIQA``.
        ensemble: how the phrasings of an attribute with several prompt pairs combine: 'mean_prob'
            (average of the pairs' probabilities, default) or 'mean_logit' (sigmoid of the mean logit difference).
        precision: 'fp32' (default, the reference numbers), 'fp32-fused', 'bf16' or 'fp16' (CUDA only)
            for the image tower, as ``create_metric``.
        channel_order: 'BGR' (BasicSR) or 'RGB'. max_value: white level (default 255; 65535 for uint16).
        device: where CLIP runs (default cuda if available); kwargs (``better``...) are ignored.
    """
    _reject_unknown('calculate_clipiqa', kwargs)
    device = _device(device)
    model, views = cached_model('clipiqa', _build_clipiqa, device, attributes=attributes, clip_model=clip_model,
                                clip_pretrained=clip_pretrained, keep_pos_embed=keep_pos_embed,
                                quick_gelu=quick_gelu, ensemble=ensemble, precision=precision)
    rgb = image_to_rgb(img, crop_border, input_order, test_y_channel, channel_order, max_value)
    return _score_zero_shot(model, views, rgb)


def _build_checkpoint_model(device, checkpoint, clip_model=None, clip_pretrained=None):
    model = load_trained_model(checkpoint, device=device, clip_model=clip_model, clip_pretrained=clip_pretrained)
    return model, ArrayViews(model, device)


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
    model, views = cached_model('checkpoint', _build_checkpoint_model, device, checkpoint=checkpoint,
                                   clip_model=clip_model, clip_pretrained=clip_pretrained)
    names = output_names(model)
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f'calculate_uiqa_checkpoint: output {output!r} is not one of {names}')
        output = names.index(output)
    elif not 0 <= output < len(names):
        raise ValueError(f'calculate_uiqa_checkpoint: output {output} out of range for outputs {names}')
    rgb = image_to_rgb(img, crop_border, input_order, test_y_channel, channel_order, max_value)
    return _score(model, views, rgb, column=output)


# What option validation accepts for these metrics besides their arguments: BasicSR's own keys.
for _fn in (calculate_clipiqa, calculate_uiqa_checkpoint):
    _fn.per_image = True  # called once per image by SRModel-like models, never on a whole set
    _fn.extra_option_keys = ('better',)
