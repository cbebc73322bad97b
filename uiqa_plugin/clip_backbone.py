"""The frozen CLIP backbone: loading, image encoding without positional embedding, text encoding.

This is the only module that knows open_clip. Everything else gets a ``ClipBackbone``
from ``load_clip`` and calls ``encode_image`` / ``text_features`` / the prompt-learner
hooks (``token_embedding``, ``encode_text_embeddings``).

Weights arrive the way users have them (``pretrained``):
- an open_clip tag such as ``'openai'`` (downloaded to the user's cache by open_clip);
- a local file: an OpenAI-format state dict, an OpenAI TorchScript archive (``RN50.pt``)
  or an open_clip checkpoint (``{'state_dict': ...}``, ``module.`` prefixes allowed);
- ``None`` / ``'none'``: random weights, for tests and benchmarks only (warns).
Whatever the container, the same weights get the same activation (QuickGELU or GELU):
see ``resolve_quick_gelu``; the choice and its reason are logged.

Positional embedding removed, as in CLIP-IQA: the pool is then size-free and full-resolution images go in. For
ResNet towers the attention pool runs with the spatial mean token as the only query and no
positional term; for ViT towers the class token and patch tokens get no positional term.
With ``keep_pos_embed=True`` the learned grid is interpolated in 2-D to the input's grid,
the class/mean slot kept apart, so a 224 x 224 input reproduces open_clip's own forward;
``keep_pos_embed='stretch_1d'`` reproduces pyiqa's 1-D stretch of the flattened list (its
512 px CLIP-IQA+ models were trained with it).
"""
import contextlib
import copy
import difflib
import json
import logging
import os
import os.path as osp
import threading
import warnings
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

import open_clip
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from uiqa_plugin.clip_precision import (attention_pool_query, autocast, check_precision, compute_dtype, full_precision,
                                        resnet_trunk_low_precision)

logger = logging.getLogger('basicsr')

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Keys that OpenAI's TorchScript archives carry besides the weights.
_OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')


class ClipLoadError(RuntimeError):
    """CLIP could not be built or its weights could not be loaded.

    Carries its parts so that each interface words the hint in its own terms:
    ``problem`` (what went wrong), ``option`` (the option to change: 'clip_model',
    'clip_pretrained' or 'quick_gelu') and ``hint`` (a sentence with an ``{option}``
    placeholder). ``message(names)`` joins them, naming the option as the user writes it:
    ``CLI_OPTION_NAMES`` for the commands, ``yaml_option_names()`` for option files.
    ``str()`` uses the Python keyword names.
    """

    def __init__(self, problem, option=None, hint=None):
        self.problem, self.option, self.hint = problem, option, hint
        super().__init__(self.message())

    def message(self, names=None):
        if not self.hint:
            return self.problem
        name = (names or {}).get(self.option, self.option)
        return f'{self.problem} {self.hint.format(option=name)}'


CLI_OPTION_NAMES = {'clip_model': '--clip-model', 'clip_pretrained': '--clip-pretrained',
                    'quick_gelu': '--quick-gelu / --no-quick-gelu'}


def yaml_option_names(section='network_g'):
    """How an option file names the CLIP options: ``network_g.clip_pretrained`` ..."""
    return {k: f'{section}.{k}' for k in ('clip_model', 'clip_pretrained', 'quick_gelu')}


_LOCAL_FILE_HINT = ('Pass a local weight file as {option} instead (an OpenAI TorchScript archive such as RN50.pt, '
                    'an OpenAI-format state dict or an open_clip checkpoint).')


# ----------------------------------------------------------------------------- loading

def _resolve_model_config(model_name):
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
        import hashlib
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


def _is_torchscript(path):
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith('constants.pkl') or '/code/' in n for n in zf.namelist())


def _scripted_activation(module):
    """The MLP activation a TorchScript CLIP archive was scripted with: True (QuickGELU), False (GELU) or None."""
    for _, sub in module.named_modules():
        name = getattr(sub, 'original_name', '')
        if name == 'QuickGELU':
            return True
        if name == 'GELU':
            return False
    return None


def read_clip_state_dict(path):
    """Read CLIP weights from a local file. Returns (state_dict, info).

    Accepts an OpenAI-format state dict, an OpenAI TorchScript archive, an open_clip
    checkpoint (``{'state_dict': ...}``; ``module.`` prefixes are stripped) or a
    ``.safetensors`` file. info: {'format': words for the log, 'quick_gelu': the activation
    a TorchScript archive records (True/False), None for state dicts, which record none}.
    """
    if not osp.isfile(path):
        raise ClipLoadError(f'CLIP weights {path}: file not found', 'clip_pretrained')
    info = {'format': 'state dict', 'quick_gelu': None}
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            checkpoint = load_file(path, device='cpu')
            info['format'] = 'safetensors state dict'
        elif _is_torchscript(path):
            scripted = torch.jit.load(path, map_location='cpu')
            checkpoint = scripted.state_dict()
            info = {'format': 'TorchScript archive', 'quick_gelu': _scripted_activation(scripted)}
        else:
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises several kinds for truncated or foreign files
        raise ClipLoadError(f'CLIP weights {path}: cannot be read as a PyTorch checkpoint or TorchScript archive '
                            f'(corrupt or not a weight file? {type(exc).__name__}: {exc})', 'clip_pretrained') from exc
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        checkpoint = checkpoint['state_dict']
        info['format'] = 'open_clip checkpoint'
    if not isinstance(checkpoint, dict) or not checkpoint or not all(torch.is_tensor(v) for v in checkpoint.values()):
        raise ClipLoadError(f'CLIP weights {path}: expected a dict of tensors (a state dict), '
                            f'got {type(checkpoint).__name__}', 'clip_pretrained')
    state_dict = {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in checkpoint.items()}
    if info['format'] == 'state dict' and any(k in state_dict for k in _OPENAI_EXTRA_KEYS):
        info['format'] = 'OpenAI-format state dict'
    for key in _OPENAI_EXTRA_KEYS:
        state_dict.pop(key, None)
    return state_dict, info


def _load_weights_into(model, state_dict, path):
    """Strict load with an error that lists what does not fit."""
    own = model.state_dict()
    # TorchScript archives also store buffers that open_clip keeps out of its state dict (attn_mask).
    non_persistent = {name for name, _ in model.named_buffers()} - set(own)
    state_dict = {k: v for k, v in state_dict.items() if k not in non_persistent}
    scale, own_scale = state_dict.get('logit_scale'), own.get('logit_scale')
    if scale is not None and own_scale is not None and scale.shape != own_scale.shape \
            and scale.numel() == own_scale.numel():  # () in some files, (1,) in others
        state_dict['logit_scale'] = scale.reshape(own_scale.shape)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f'{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def few(items):
            return ', '.join(items[:5]) + (f' ... ({len(items)} in all)' if len(items) > 5 else '')
        parts = []
        if mismatched:
            parts.append(f'shape mismatch: {few(mismatched)}')
        if missing:
            parts.append(f'missing: {few(missing)}')
        if unexpected:
            parts.append(f'unexpected: {few(unexpected)}')
        raise ClipLoadError(f'CLIP weights {path} do not fit the architecture: ' + '; '.join(parts) + '.',
                            'clip_model', 'Check that {option} names the architecture these weights were trained with.')
    model.load_state_dict(state_dict, strict=True)


def _tag_activations(model_name):
    """{tag: QuickGELU?} for every pretrained weight set open_clip publishes for this model name."""
    if model_name not in open_clip.list_models():
        return {}
    return {tag: bool(open_clip.get_pretrained_cfg(model_name, tag).get('quick_gelu', False))
            for tag in open_clip.list_pretrained_tags_by_model(model_name)}


def resolve_quick_gelu(model_name, quick_gelu=None, tag=None, recorded=None):
    """Which MLP activation to build CLIP with. Returns (quick_gelu, reason for the log).

    The rule, first match wins (the container of a state dict never matters):
    1. ``quick_gelu`` given (True/False): the user's choice (arch option, CLI flag, checkpoint);
    2. a TorchScript archive: the activation it was scripted with (``recorded``);
    3. an open_clip pretrained ``tag``: open_clip's setting for that tag;
    4. weights from a state dict: the model config's ``quick_gelu`` key when it has one
       (``RN50-quickgelu``, a JSON config); else QuickGELU when EVERY weight set open_clip
       publishes for the name was trained with it (RN50, RN101, RN50x4/x16/x64, ViT-L-14-336:
       OpenAI's releases and yfcc15m/cc12m); else GELU, the config's default (ViT-B-32 and
       others have weights of both kinds: OpenAI's need quick_gelu=True).
    """
    if quick_gelu is not None:
        return bool(quick_gelu), 'set by the quick_gelu option'
    if recorded is not None:
        return recorded, f'the TorchScript archive uses {"QuickGELU" if recorded else "GELU"}'
    if tag is not None:
        on = bool(open_clip.get_pretrained_cfg(model_name, tag).get('quick_gelu', False))
        return on, f'open_clip trained {model_name}/{tag} with {"QuickGELU" if on else "GELU"}'
    config = open_clip.get_model_config(model_name) or {}
    if 'quick_gelu' in config:
        return bool(config['quick_gelu']), f'the model config {model_name} sets quick_gelu'
    tags = _tag_activations(model_name)
    if tags and all(tags.values()):
        return True, (f'every published {model_name} weight set ({", ".join(tags)}) was trained with QuickGELU; '
                      'quick_gelu=False overrides')
    if any(tags.values()):
        with_quick = [t for t, on in tags.items() if on]
        return False, (f'{model_name} weights exist with both activations and a state dict does not record which; '
                       f'GELU assumed. Weights from {", ".join(with_quick[:4])} need quick_gelu=True')
    return False, 'the model config uses GELU'


class _DropOpenClipRandomInitWarning(logging.Filter):
    """open_clip warns 'No pretrained weights loaded ... initialized randomly' before we load a local file."""

    def filter(self, record):
        return 'No pretrained weights loaded' not in record.getMessage()


def _create_open_clip_model(model_name, quick_gelu, **kwargs):
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


def _env_flag(name):
    return os.environ.get(name, '').strip().lower() in ('1', 'true', 'yes', 'on')


def cached_pretrained_file(model_name, tag, cache_dir=None):
    """The local file of an open_clip pretrained tag if it is already downloaded, else None (no network)."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if cfg.get('file') and osp.isfile(cfg['file']):
        return cfg['file']
    if cfg.get('hf_hub'):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        repo_id, filename = os.path.split(cfg['hf_hub'])
        filename = filename or 'open_clip_pytorch_model.bin'
        candidates = [filename]
        if filename.endswith('.bin'):
            candidates.insert(0, filename.replace('pytorch_model.bin', 'model.safetensors'))
        for name in candidates:
            try:
                found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            except Exception:  # a malformed cache is the same as no cache here
                found = None
            if isinstance(found, str) and osp.isfile(found):
                return found
    if cfg.get('url'):
        path = osp.join(cache_dir or osp.expanduser('~/.cache/clip'), osp.basename(cfg['url']))
        if osp.isfile(path):
            return path
    return None


def _download_host(model_name, tag):
    from urllib.parse import urlparse
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if cfg.get('hf_hub'):
        return urlparse(os.environ.get('HF_ENDPOINT', 'https://huggingface.co')).hostname
    return urlparse(cfg.get('url', '')).hostname


def _reachable(host, timeout=3.0):
    """Whether a TCP connection to host:443 opens within ``timeout`` s: an offline machine fails in seconds,
    not after a minute of download retries. Through a proxy we cannot tell, so we say yes."""
    import socket
    if not host or any(os.environ.get(k) for k in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy')):
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _create_from_tag(model_name, tag, quick_gelu, cache_dir):
    """open_clip model with the tag's weights: from the download cache when it is there, else downloaded.

    Offline (``HF_HUB_OFFLINE=1``, or the download host unreachable within seconds) fails
    at once with ClipLoadError instead of a minute of retries.
    """
    cached = cached_pretrained_file(model_name, tag, cache_dir)
    if cached is not None:
        return _create_open_clip_model(model_name, quick_gelu, pretrained=cached), cached
    what = f'CLIP {model_name} weights {tag!r} are not in the download cache'
    if _env_flag('HF_HUB_OFFLINE'):
        raise ClipLoadError(f'{what} and HF_HUB_OFFLINE is set.', 'clip_pretrained', _LOCAL_FILE_HINT)
    host = _download_host(model_name, tag)
    if not _reachable(host):
        raise ClipLoadError(f'{what} and {host} cannot be reached (offline?).', 'clip_pretrained', _LOCAL_FILE_HINT)
    hub_logger = logging.getLogger('huggingface_hub')
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # one clear error below, not a page of retry warnings
    try:
        model = _create_open_clip_model(model_name, quick_gelu, pretrained=tag, cache_dir=cache_dir)
    except Exception as exc:  # network errors surface as many types (URLError, HF hub errors, OSError)
        raise ClipLoadError(f'CLIP {model_name} weights {tag!r} could not be downloaded '
                            f'({type(exc).__name__}: {str(exc)[:300]}).', 'clip_pretrained', _LOCAL_FILE_HINT) from exc
    finally:
        hub_logger.setLevel(level)
    return model, cached_pretrained_file(model_name, tag, cache_dir) or f'{model_name}/{tag}'


def _is_local_path(pretrained):
    return osp.exists(pretrained) or osp.sep in pretrained or pretrained.endswith(
        ('.pt', '.pth', '.bin', '.safetensors'))


def build_clip_model(model_name='RN50', pretrained='openai', quick_gelu=None, cache_dir=None):
    """Build an open_clip model and load its weights. Returns (model, info).

    quick_gelu: None picks the activation by ``resolve_quick_gelu``'s rule; True/False forces it.
    info: {'source': where the weights came from, 'format', 'quick_gelu': the activation used,
    'quick_gelu_reason'}. The choice and the source are logged (logger 'basicsr').
    """
    model_name = _resolve_model_config(model_name)
    if pretrained in (None, '', 'none', 'None', 'random'):
        warnings.warn(f'CLIP {model_name} has RANDOM weights (pretrained=None): scores are meaningless; '
                      'use this only for tests and benchmarks.', stacklevel=3)
        on, reason = resolve_quick_gelu(model_name, quick_gelu)
        model = _create_open_clip_model(model_name, on, pretrained=None)
        return model, {'source': 'random', 'format': 'random weights', 'quick_gelu': on, 'quick_gelu_reason': reason}

    pretrained = os.fspath(pretrained)
    if _is_local_path(pretrained):
        state_dict, info = read_clip_state_dict(pretrained)
        on, reason = resolve_quick_gelu(model_name, quick_gelu, recorded=info['quick_gelu'])
        model = _create_open_clip_model(model_name, on, pretrained=None)
        _load_weights_into(model, state_dict, pretrained)
        return model, {'source': osp.abspath(pretrained), 'format': info['format'], 'quick_gelu': on,
                       'quick_gelu_reason': reason}

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ClipLoadError(f'CLIP {model_name}: {pretrained!r} is neither a local file nor a known pretrained tag '
                            f'of this model (tags: {", ".join(tags) or "none"}).', 'clip_pretrained',
                            'Check {option}.')
    on, reason = resolve_quick_gelu(model_name, quick_gelu, tag=pretrained)
    model, source = _create_from_tag(model_name, pretrained, on, cache_dir)
    return model, {'source': source, 'format': f'open_clip tag {pretrained!r}', 'quick_gelu': on,
                   'quick_gelu_reason': reason}


_SHARED = {}
_SHARED_LOCK = threading.Lock()


def load_clip(model_name='RN50', pretrained='openai', quick_gelu=None, cache_dir=None):
    """The shared, frozen ``ClipBackbone`` for these weights, built on first use.

    Every arch that asks for the same (model, weights, activation) gets the same instance, so
    CLIP sits in memory once however many prompt pairs, views or metrics use it. Thread-safe:
    concurrent first calls build it once. Never change the instance returned: a model that
    trains CLIP parts takes ``private_copy()`` first.
    """
    if pretrained not in (None, '') and osp.exists(os.fspath(pretrained)):
        pretrained_key = osp.abspath(os.fspath(pretrained))
    else:
        pretrained_key = pretrained
    model_name = _resolve_model_config(model_name)
    key = (model_name, pretrained_key, quick_gelu)
    with _SHARED_LOCK:
        clip = _SHARED.get(key)
        if clip is None:
            # Building draws random initial weights before loading the real ones: keep that off the
            # global RNG, so a model's own random init does not depend on whether CLIP was already loaded.
            with torch.random.fork_rng(devices=[]):
                model, info = build_clip_model(model_name, pretrained, quick_gelu, cache_dir)
            resolved = (model_name, pretrained_key, info['quick_gelu'])
            clip = _SHARED.get(resolved)  # asked before with the activation spelled out
            if clip is None:
                clip = ClipBackbone(model, name=model_name, source=info['source'], quick_gelu=info['quick_gelu'])
                clip.load_info = info
            _SHARED[key] = _SHARED[resolved] = clip
            verb = 'Loaded'
        else:
            verb = 'Using the already loaded'
    # Logged at every use, so that a log file opened after the first load (BasicSR's) still says it.
    info = clip.load_info
    logger.info(f'{verb} CLIP {model_name} weights from {info["source"]} ({info["format"]}).')
    logger.info(f'QuickGELU: {"on" if info["quick_gelu"] else "off"} ({info["quick_gelu_reason"]}).')
    return clip


def load_clip_for_network(net_opt):
    """Load the CLIP that an arch's options (``network_g``) name, before the arch is built.

    Lets the training and test entry points fail on a bad ``clip_pretrained`` before
    BasicSR creates experiment folders; the arch then gets the same shared instance.
    Does nothing for archs without CLIP options. Raises ClipLoadError.
    """
    import inspect

    from basicsr.utils.registry import ARCH_REGISTRY
    if not isinstance(net_opt, dict) or net_opt.get('type') not in ARCH_REGISTRY:
        return None
    defaults = {}
    for cls in ARCH_REGISTRY.get(net_opt['type']).__mro__:  # subclasses pass **kwargs up
        init = cls.__dict__.get('__init__')
        if init is not None:
            for name, param in inspect.signature(init).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    defaults.setdefault(name, param.default)
    if 'clip_pretrained' not in defaults:
        return None
    options = {k: net_opt.get(k, defaults.get(k)) for k in ('clip_model', 'clip_pretrained', 'quick_gelu')}
    return load_clip(options['clip_model'] or 'RN50', options['clip_pretrained'], quick_gelu=options['quick_gelu'])


def clear_shared_clip():
    """Forget the shared instances (tests; freeing memory)."""
    with _SHARED_LOCK:
        _SHARED.clear()


# ----------------------------------------------------------------------------- encoding

def interpolate_grid_embedding(pos_embed, grid_hw, num_prefix=1):
    """Resize a learned positional embedding to another token grid, in 2-D.

    pos_embed: (num_prefix + S*S, C) with a square S x S grid; returns
    (num_prefix + h*w, C). The prefix (class / mean slot) is kept apart, not stretched.
    """
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    side = int(round(grid.shape[0] ** 0.5))
    if side * side != grid.shape[0]:
        raise ValueError(f'positional embedding grid of {grid.shape[0]} tokens is not square')
    h, w = grid_hw
    if (h, w) != (side, side):
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode='bicubic', align_corners=False).to(pos_embed.dtype)
        grid = grid.permute(0, 2, 3, 1).reshape(h * w, -1)
    return torch.cat([prefix, grid], dim=0)


POS_EMBED_MODES = (False, True, 'interpolate_2d', 'stretch_1d')


def check_pos_embed_mode(mode):
    """``keep_pos_embed`` values: False (removed, CLIP-IQA), True / 'interpolate_2d', 'stretch_1d'."""
    if mode not in POS_EMBED_MODES or (mode is not True and mode is not False and not isinstance(mode, str)):
        raise ValueError(f"keep_pos_embed must be false, true ('interpolate_2d') or 'stretch_1d', got {mode!r}")
    return mode


def stretch_embedding_1d(pos_embed, num_tokens):
    """pyiqa's resize of a positional embedding (its clipiqa+_rn50_512 / _vitL14_512 models).

    The flattened (1 + S*S, C) list, class/mean slot included, is resized bicubically along
    the token axis to (num_tokens, C), ignoring the grid's two dimensions. Geometrically
    wrong (the grid is 2-D), as the CLIP-IQA+ reference and pyiqa do; kept to reproduce weights trained with it.
    """
    work = pos_embed if pos_embed.dtype == torch.float64 else pos_embed.float()
    out = F.interpolate(work[None, None], size=(num_tokens, pos_embed.shape[1]), mode='bicubic')
    return out[0, 0].to(pos_embed.dtype)


def resize_positional_embedding(pos_embed, grid_hw, mode=True):
    """The positional embedding for an (h, w) token grid: 2-D interpolation, or pyiqa's 1-D stretch."""
    if mode == 'stretch_1d':
        return stretch_embedding_1d(pos_embed, 1 + grid_hw[0] * grid_hw[1])
    return interpolate_grid_embedding(pos_embed, grid_hw)


def attention_pool(pool, feature_map, keep_pos_embed=False):
    """CLIP's ResNet attention pool over any spatial size.

    feature_map: (N, C, H, W). The spatial mean token is the only query; with
    ``keep_pos_embed=False`` no positional term is added. Returns (N, output_dim).
    """
    n, c, h, w = feature_map.shape
    tokens = feature_map.flatten(2).permute(2, 0, 1)  # (HW, N, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    if keep_pos_embed:
        tokens = tokens + resize_positional_embedding(pool.positional_embedding, (h, w), keep_pos_embed)[:, None, :].to(
            tokens.dtype)
    out, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens,
        embed_dim_to_check=c,
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    return out[0]


def _resnet_forward(visual, x, keep_pos_embed, precision='fp32'):
    if precision != 'fp32':  # low-precision trunk, fp32 attention pool (clip_precision)
        x = resnet_trunk_low_precision(visual, x, precision)
        h, w = x.shape[-2:]
        pos = resize_positional_embedding(visual.attnpool.positional_embedding, (h, w), keep_pos_embed) \
            if keep_pos_embed else None
        return attention_pool_query(visual.attnpool, x, pos)
    x = visual.stem(x)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    return attention_pool(visual.attnpool, x, keep_pos_embed)


def _vit_forward(visual, x, keep_pos_embed, precision='fp32'):
    with autocast(precision, x.device):  # patch embedding and blocks; pooling and projection below in fp32
        x = visual.conv1(x)  # (N, width, gh, gw)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        if keep_pos_embed:
            x = x + resize_positional_embedding(visual.positional_embedding, (gh, gw), keep_pos_embed).to(x.dtype)
        x = visual.patch_dropout(x)
        x = visual.ln_pre(x)
        x = visual.transformer(x)
    if precision != 'fp32':
        x = x.float()
    with full_precision(x.device) if precision != 'fp32' else contextlib.nullcontext():
        pooled, _ = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
    return pooled


class ClipBackbone(nn.Module):
    """A frozen open_clip model with the encoders CLIP-IQA needs.

    Always in eval mode (RN50 has BatchNorm) and without gradients. A model that fine-tunes
    parts takes a ``private_copy()`` and ``unfreeze``s parts of that; the shared instance
    never changes. Not meant to be saved in our checkpoints: archs hold it outside their
    module tree.
    """

    def __init__(self, model, name='', source='', quick_gelu=None):
        super().__init__()
        self.model = model
        self.name = name
        self.source = source
        self.quick_gelu = quick_gelu  # the activation it was built with (recorded in our checkpoints)
        self.load_info = {'source': source, 'format': '', 'quick_gelu': quick_gelu, 'quick_gelu_reason': 'given'}
        self.requires_grad_(False)
        self.eval()
        self._text_cache = {}
        self._variants = {}  # (device, dtype) -> shared copy, see variant()
        self.exclusive = False  # a private_copy(): its owner may train parts of it
        self.tokenizer = open_clip.get_tokenizer(name) if name in open_clip.list_models() else open_clip.tokenize
        visual = model.visual
        if isinstance(visual, ModifiedResNet):
            self._image_forward = _resnet_forward
        elif isinstance(visual, VisionTransformer):
            self._image_forward = _vit_forward
        else:
            raise ClipLoadError(f'CLIP {name}: image tower {type(visual).__name__} is not supported '
                                '(ResNet with attention pool, or ViT)', 'clip_model')
        # The text tower lives on the model itself (CLIP) or in .text (CustomTextCLIP).
        self._text = model.text if hasattr(model, 'text') else model

    def train(self, mode=True):
        # Frozen CLIP stays in eval mode whatever its owners do (BatchNorm statistics must not move).
        return super().train(False)

    @property
    def device(self):
        return self.model.logit_scale.device

    @property
    def dtype(self):
        return self.model.logit_scale.dtype

    @property
    def embed_dim(self):
        return self._text.text_projection.shape[-1] if not isinstance(self._text.text_projection, nn.Linear) \
            else self._text.text_projection.out_features

    @property
    def text_width(self):
        return self._text.token_embedding.weight.shape[1]

    @property
    def context_length(self):
        return self._text.positional_embedding.shape[0]

    def logit_scale(self):
        """exp(logit_scale) as a 0-dim tensor (100 for OpenAI weights), read from the weights."""
        return self.model.logit_scale.exp().reshape(())

    def normalize(self, images):
        """(N, 3, H, W) RGB in [0, 1] -> CLIP-normalized."""
        mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def encode_image(self, images, keep_pos_embed=False, normalize_features=True, precision='fp32'):
        """CLIP-normalized images (N, 3, H, W), any H and W -> features (N, D), unit norm by default.

        precision: 'fp32' (the reference), 'fp32-fused' (folded ResNet trunk), 'bf16' or 'fp16'
        (CUDA only) for the heavy layers; see ``clip_precision``. Features come out in fp32.
        """
        check_precision(precision, images.device)
        if precision != 'fp32':
            images = images.float()  # the trunk casts once, after folding; the pool reads fp32
            feats = self._image_forward(self.model.visual, images, keep_pos_embed, precision)
            with full_precision(images.device):
                return F.normalize(feats.float(), dim=-1) if normalize_features else feats.float()
        feats = self._image_forward(self.model.visual, images.to(self.dtype), keep_pos_embed)
        return F.normalize(feats, dim=-1) if normalize_features else feats

    # --- text
    def tokenize(self, texts):
        """List of strings -> token ids (M, context_length)."""
        return self.tokenizer(list(texts)).to(self.device)

    def encode_text(self, texts):
        """List of M prompts -> unit-norm features (M, D), computed now (no cache)."""
        return self.model.encode_text(self.tokenize(texts), normalize=True)

    def text_features(self, texts):
        """Unit-norm features (M, D) of fixed prompts, computed once per device and dtype and cached."""
        key = (tuple(texts), self.device, self.dtype)
        feats = self._text_cache.get(key)
        if feats is None:
            # Never an inference tensor (scoring may run under inference_mode): training reuses the cache.
            with torch.inference_mode(False), torch.no_grad():
                feats = self.encode_text(texts)
            self._text_cache[key] = feats
        return feats

    def token_embedding(self, tokens):
        """Token ids (M, L) -> input embeddings (M, L, width), for learned prompts."""
        return self._text.token_embedding(tokens)

    def encode_text_embeddings(self, embeddings, eot_index, precision='fp32'):
        """Text features from input embeddings (M, L, width) with the EOT token at ``eot_index`` (M,).

        Same computation as CLIP's text tower: + positional embedding -> causal transformer
        -> ln_final -> EOT token -> projection. Returns unit-norm (M, D). With a low
        ``precision`` the transformer blocks run under autocast on CUDA, the rest in fp32 (on
        CPU the text tower stays fp32: its bf16 backward measured 1.7x slower than fp32).
        """
        text = self._text
        cast_dtype = text.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + text.positional_embedding.to(cast_dtype)
        if compute_dtype(precision) != torch.float32 and x.device.type == 'cuda':
            with autocast(precision, x.device):
                x = text.transformer(x, attn_mask=text.attn_mask)
            with full_precision(x.device):
                return self._text_head(x.float(), eot_index)
        x = text.transformer(x, attn_mask=text.attn_mask)
        return self._text_head(x, eot_index)

    def _text_head(self, x, eot_index):
        """Transformer output (M, L, width) -> unit-norm features (M, D): ln_final, EOT token, projection."""
        text = self._text
        x = text.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        proj = text.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return F.normalize(x, dim=-1)

    def _apply(self, fn, recurse=True):
        # Moving or casting the model makes cached text features stale.
        self._text_cache.clear()
        return super()._apply(fn, recurse)

    def variant(self, fn):
        """The shared instance for the device and dtype that ``fn`` (a ``Module._apply`` function) converts to.

        Models that move to another device get a copy for that device, shared by every model
        there, instead of dragging the one instance away from the models that still use it.
        An instance with fine-tuned parts belongs to its model and moves itself.
        """
        probe = fn(torch.zeros((), dtype=self.dtype, device=self.device))
        if self.exclusive:
            self._apply(fn)
            return self
        key = (probe.device, probe.dtype)
        if key == (self.device, self.dtype):
            return self
        if key not in self._variants:
            clone = self._detached_copy()
            clone._variants = self._variants  # all variants share one table
            clone._apply(fn)
            self._variants[key] = clone
            self._variants.setdefault((self.device, self.dtype), self)
        return self._variants[key]

    def _detached_copy(self):
        """A deep copy of the model without the shared tables (variants, text cache)."""
        clone = copy.copy(self)
        clone.__dict__ = {k: v for k, v in self.__dict__.items() if k not in ('_variants', '_text_cache')}
        clone = copy.deepcopy(clone)
        clone._variants, clone._text_cache = {}, {}
        return clone

    def private_copy(self):
        """A deep copy that belongs to one model, for fine-tuning (copy-on-unfreeze).

        The shared instance from ``load_clip`` never changes: its weights, requires_grad flags
        and text cache stay what every other model relies on. The copy moves with its owner.
        """
        clone = self._detached_copy()
        clone.exclusive = True
        return clone

    @property
    def text_trains(self):
        """Whether any text-tower parameter (everything outside ``visual``) is trainable."""
        return any(p.requires_grad for name, p in self.model.named_parameters() if not name.startswith('visual.'))

    def unfreeze(self, prefixes, keep_frozen=()):
        """Let the parameters under these dotted prefixes of the open_clip model train (e.g. 'visual.layer4').

        Parameters whose name ends with one of ``keep_frozen`` stay frozen (the positional
        embedding when the forward never uses it: DDP refuses parameters without gradients).
        Returns {prefix: module}; the caller registers these modules so that they are saved.
        Only on a ``private_copy()``: the shared instance must never change.
        """
        if not self.exclusive:
            raise RuntimeError('unfreeze() on the shared CLIP would change every model that uses it: '
                               'call it on clip.private_copy()')
        parts = {}
        for prefix in prefixes:
            try:
                module = self.model.get_submodule(prefix)
            except AttributeError:
                raise ClipLoadError(f'CLIP {self.name} has no part {prefix!r} to fine-tune') from None
            for name, param in module.named_parameters():
                param.requires_grad_(not name.endswith(tuple(keep_frozen)))
            parts[prefix] = module
        self._text_cache.clear()
        return parts


# ----------------------------------------------------------------------------- random CLIPs for demos and tests

def make_random_clip(model_name, seed=0, calibration_images=None, batch_size=32):
    """A randomly initialised open_clip model, optionally with BatchNorm statistics calibrated on images.

    Random ResNet towers in eval mode map every image to nearly the same feature (their
    BatchNorm statistics are 0/1 placeholders). Re-estimating the statistics on a few
    CLIP-normalized images (N, 3, H, W) gives random but image-dependent features, enough
    for the demo dataset to be learnable offline. Never a substitute for real weights.
    """
    model_name = _resolve_model_config(model_name)
    torch.manual_seed(seed)
    quick_gelu = bool((open_clip.get_model_config(model_name) or {}).get('quick_gelu', False))
    model = _create_open_clip_model(model_name, quick_gelu, pretrained=None)  # the activation is not in the weights
    model.eval()
    if calibration_images is not None and isinstance(model.visual, ModifiedResNet):
        norms = [m for m in model.visual.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all calibration batches
            m.train()
        with torch.no_grad():
            for start in range(0, len(calibration_images), batch_size):
                _resnet_forward(model.visual, calibration_images[start:start + batch_size], False)
        for m in norms:
            m.eval()
    return model


def save_clip_checkpoint(model, path):
    """Save an open_clip model as an open_clip-style checkpoint ({'state_dict': ...}) that load_clip reads."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    torch.save({'state_dict': model.state_dict()}, path)
    return path
