"""CLIP weights as users have them: reading local files, the open_clip download cache, the activation rule.

Local files: an OpenAI-format state dict, an OpenAI TorchScript archive (``RN50.pt``), an
open_clip checkpoint (``{'state_dict': ...}``, ``module.`` prefixes allowed) or a
``.safetensors`` file. Nothing in a file is executed: see ``torchscript_archive``.
Whatever the container, the same weights get the same activation (QuickGELU or GELU):
see ``resolve_quick_gelu``.
"""
import contextlib
import contextvars
import os
import os.path as osp
import zipfile

import open_clip
import torch

from uiqa_plugin.checkpoint_io import (TRUST_HINT, NonFiniteWeightsError, UnsafeCheckpointError, check_finite,
                                      load_checkpoint)
from uiqa_plugin.clip.errors import ClipLoadError
from uiqa_plugin.clip.torchscript import UnsafeArchiveError, read_torchscript_weights

# Keys that OpenAI's TorchScript archives carry besides the weights.
_OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')


def is_torchscript(path):
    """Whether ``path`` is a TorchScript archive (a zip with code or constants), not a ``torch.save`` file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith('constants.pkl') or '/code/' in n for n in zf.namelist())


# Whether weight files that loading would run code from may be loaded (the user's --trust-checkpoint),
# scoped to a ``with trusting(...)`` block of one thread: never a process-wide switch.
_TRUSTED = contextvars.ContextVar('uiqa_trust_weight_files', default=False)


@contextlib.contextmanager
def trusting(trust=True):
    """Within this block, CLIP weight files that need code to load (TorchScript archives with code that
    runs on load, pickles of Python objects) are loaded anyway: the user vouched for them."""
    token = _TRUSTED.set(bool(trust))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _scripted_activation(module):
    """The MLP activation of a module loaded by ``torch.jit.load``: True (QuickGELU), False (GELU) or None."""
    for _, sub in module.named_modules():
        name = getattr(sub, 'original_name', '')
        if name == 'QuickGELU':
            return True
        if name == 'GELU':
            return False
    return None


def _read_torchscript(path):
    """(state dict, info) of a TorchScript archive: read as data; through ``torch.jit.load`` only when trusted."""
    try:
        state_dict, quick_gelu = read_torchscript_weights(path)
        return state_dict, {'format': 'TorchScript archive', 'quick_gelu': quick_gelu}
    except UnsafeArchiveError as exc:
        if not _TRUSTED.get():
            raise ClipLoadError(f'CLIP weights {path}: refused, {exc} (OpenAI\'s archives hold only modules and '
                                f'tensors). If you trust where this file comes from, pass {TRUST_HINT} to load '
                                'it anyway.') from None
    scripted = torch.jit.load(path, map_location='cpu')  # trusted on purpose: this runs the archive's code
    return scripted.state_dict(), {'format': 'TorchScript archive (trusted, loaded with its code)',
                                   'quick_gelu': _scripted_activation(scripted)}


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
        elif is_torchscript(path):
            checkpoint, info = _read_torchscript(path)
        else:
            checkpoint = load_checkpoint(path, trust=_TRUSTED.get(), what='CLIP weights', trust_hint=TRUST_HINT)
    except ClipLoadError:
        raise
    except UnsafeCheckpointError as exc:
        raise ClipLoadError(str(exc), 'clip_pretrained') from None
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


def load_weights_into(model, state_dict, path):
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
    try:  # after dropping the attention masks, which hold -inf on purpose
        check_finite(state_dict, f'CLIP weights {path}')
    except NonFiniteWeightsError as exc:
        raise ClipLoadError(str(exc), 'clip_pretrained') from None
    model.load_state_dict(state_dict, strict=True)


def tag_activations(model_name):
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
    tags = tag_activations(model_name)
    if tags and all(tags.values()):
        return True, (f'every published {model_name} weight set ({", ".join(tags)}) was trained with QuickGELU; '
                      'quick_gelu=False overrides')
    if any(tags.values()):
        with_quick = [t for t, on in tags.items() if on]
        return False, (f'{model_name} weights exist with both activations and a state dict does not record which; '
                       f'GELU assumed. Weights from {", ".join(with_quick[:4])} need quick_gelu=True')
    return False, 'the model config uses GELU'


def env_flag(name):
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


def download_host(model_name, tag):
    from urllib.parse import urlparse
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if cfg.get('hf_hub'):
        return urlparse(os.environ.get('HF_ENDPOINT', 'https://huggingface.co')).hostname
    return urlparse(cfg.get('url', '')).hostname


def reachable(host, timeout=3.0):
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
