"""Building open_clip models: model configs by name or JSON file, weights from a tag, a file or none.

``build_clip_model`` hides how weights arrive (an open_clip tag, downloaded once; a local
file; ``None`` for random weights, tests and benchmarks only) as ``open_clip.create_model``
does, and picks the MLP activation by ``pretrained.resolve_quick_gelu``'s rule.
"""
import difflib
import hashlib
import json
import logging
import os
import os.path as osp
import warnings

import open_clip
import torch
import torch.nn as nn
from open_clip.modified_resnet import ModifiedResNet

from uiqa_plugin.checkpoint_io import looks_like_path
from uiqa_plugin.clip import pretrained as weights
from uiqa_plugin.clip.errors import LOCAL_FILE_HINT, ClipLoadError
from uiqa_plugin.clip.model import resnet_forward



def resolve_model_config(model_name):
    """A name known to open_clip, or a path to a JSON model config (open_clip's format)."""
    if model_name.endswith('.json'):
        if not osp.isfile(model_name):
            raise ClipLoadError(f'CLIP model config {model_name}: file not found', 'clip_model')
        try:
            with open(model_name, encoding='utf-8') as f:
                cfg = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise ClipLoadError(f'CLIP model config {model_name}: not valid JSON ({exc})', 'clip_model') from exc
        if not all(k in cfg for k in ('embed_dim', 'vision_cfg', 'text_cfg')):
            raise ClipLoadError(f'CLIP model config {model_name}: needs the keys embed_dim, vision_cfg and text_cfg',
                                'clip_model')
        # open_clip looks configs up by a plain name (no path separators): register the file's contents.
        digest = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
        name = f'{osp.splitext(osp.basename(model_name))[0]}-{digest}'
        open_clip.factory._MODEL_CONFIGS[name] = cfg
        return name
    if model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5, cutoff=0.5)
        hint = f' Close names: {", ".join(close)}.' if close else ''
        raise ClipLoadError(f'unknown CLIP model {model_name!r}.{hint}', 'clip_model',
                            'See open_clip.list_models() for all names, or pass a JSON model config file as {option}.')
    return model_name


class _DropOpenClipRandomInitWarning(logging.Filter):
    """open_clip warns 'No pretrained weights loaded ... initialized randomly' before we load a local file."""

    def filter(self, record):
        return 'No pretrained weights loaded' not in record.getMessage()


def create_open_clip_model(model_name, quick_gelu, **kwargs):
    """open_clip.create_model with the activation set either way, and without its random-init warning."""
    config = open_clip.get_model_config(model_name) or {}
    if not quick_gelu and config.get('quick_gelu'):
        kwargs['quick_gelu'] = False  # a model kwarg overrides the config (force_quick_gelu only turns it on)
    dropper = _DropOpenClipRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(dropper)
    for handler in root.handlers:
        handler.addFilter(dropper)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*QuickGELU mismatch.*')
            return open_clip.create_model(model_name, force_quick_gelu=bool(quick_gelu), **kwargs)
    finally:
        root.removeFilter(dropper)
        for handler in root.handlers:
            handler.removeFilter(dropper)


def _create_from_tag(model_name, tag, quick_gelu, cache_dir):
    """open_clip model with the tag's weights: from the download cache when it is there, else downloaded.

    Offline (``HF_HUB_OFFLINE=1``, or the download host unreachable within seconds) fails
    at once with ClipLoadError instead of a minute of retries.
    """
    cached = weights.cached_pretrained_file(model_name, tag, cache_dir)
    if cached is not None:
        return create_open_clip_model(model_name, quick_gelu, pretrained=cached), cached
    what = f'CLIP {model_name} weights {tag!r} are not in the download cache'
    if weights.env_flag('HF_HUB_OFFLINE'):
        raise ClipLoadError(f'{what} and HF_HUB_OFFLINE is set.', 'clip_pretrained', LOCAL_FILE_HINT)
    host = weights.download_host(model_name, tag)
    if not weights.reachable(host):
        raise ClipLoadError(f'{what} and {host} cannot be reached (offline?).', 'clip_pretrained', LOCAL_FILE_HINT)
    hub_logger = logging.getLogger('huggingface_hub')
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # one clear error below, not a page of retry warnings
    try:
        model = create_open_clip_model(model_name, quick_gelu, pretrained=tag, cache_dir=cache_dir)
    except Exception as exc:  # network errors surface as many types (URLError, HF hub errors, OSError)
        raise ClipLoadError(f'CLIP {model_name} weights {tag!r} could not be downloaded '
                            f'({type(exc).__name__}: {str(exc)[:300]}).', 'clip_pretrained', LOCAL_FILE_HINT) from exc
    finally:
        hub_logger.setLevel(level)
    return model, weights.cached_pretrained_file(model_name, tag, cache_dir) or f'{model_name}/{tag}'


def build_clip_model(model_name='RN50', pretrained='openai', quick_gelu=None, cache_dir=None):
    """Build an open_clip model and load its weights. Returns (model, info).

    quick_gelu: None picks the activation by ``resolve_quick_gelu``'s rule; True/False forces it.
    info: {'source': where the weights came from, 'format', 'quick_gelu': the activation used,
    'quick_gelu_reason'}. The choice and the source are logged (logger 'basicsr').
    """
    model_name = resolve_model_config(model_name)
    if pretrained in (None, '', 'none', 'None', 'random'):
        warnings.warn(f'CLIP {model_name} has RANDOM weights (pretrained=None): scores are meaningless; '
                      'use this only for tests and benchmarks.', stacklevel=3)
        on, reason = weights.resolve_quick_gelu(model_name, quick_gelu)
        model = create_open_clip_model(model_name, on, pretrained=None)
        return model, {'source': 'random', 'format': 'random weights', 'quick_gelu': on, 'quick_gelu_reason': reason}

    pretrained = os.fspath(pretrained)
    if osp.exists(pretrained) or looks_like_path(pretrained):
        state_dict, info = weights.read_clip_state_dict(pretrained)
        on, reason = weights.resolve_quick_gelu(model_name, quick_gelu, recorded=info['quick_gelu'])
        model = create_open_clip_model(model_name, on, pretrained=None)
        weights.load_weights_into(model, state_dict, pretrained)
        return model, {'source': osp.abspath(pretrained), 'format': info['format'], 'quick_gelu': on,
                       'quick_gelu_reason': reason}

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ClipLoadError(f'CLIP {model_name}: {pretrained!r} is neither a local file nor a known pretrained tag '
                            f'of this model (tags: {", ".join(tags) or "none"}).', 'clip_pretrained',
                            'Check {option}.')
    on, reason = weights.resolve_quick_gelu(model_name, quick_gelu, tag=pretrained)
    model, source = _create_from_tag(model_name, pretrained, on, cache_dir)
    return model, {'source': source, 'format': f'open_clip tag {pretrained!r}', 'quick_gelu': on,
                   'quick_gelu_reason': reason}


def make_random_clip(model_name, seed=0, calibration_images=None, batch_size=32):
    """A randomly initialised open_clip model, optionally with BatchNorm statistics calibrated on images.

    Random ResNet towers in eval mode map every image to nearly the same feature (their
    BatchNorm statistics are 0/1 placeholders). Re-estimating the statistics on a few
    CLIP-normalized images (N, 3, H, W) gives random but image-dependent features, enough
    for the demo dataset to be learnable offline. Never a substitute for real weights.
    """
    model_name = resolve_model_config(model_name)
    torch.manual_seed(seed)
    quick_gelu = bool((open_clip.get_model_config(model_name) or {}).get('quick_gelu', False))
    model = create_open_clip_model(model_name, quick_gelu, pretrained=None)  # the activation is not in the weights
    model.eval()
    if calibration_images is not None and isinstance(model.visual, ModifiedResNet):
        norms = [m for m in model.visual.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all calibration batches
            m.train()
        with torch.no_grad():
            for start in range(0, len(calibration_images), batch_size):
                resnet_forward(model.visual, calibration_images[start:start + batch_size], False)
        for m in norms:
            m.eval()
    return model


def save_clip_checkpoint(model, path):
    """Save an open_clip model as an open_clip-style checkpoint ({'state_dict': ...}) that load_clip reads."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    torch.save({'state_dict': model.state_dict()}, path)
    return path
