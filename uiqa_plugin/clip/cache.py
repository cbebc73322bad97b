"""The shared CLIP instances: one ``ClipBackbone`` per (model, weights, activation) in a process."""
import inspect
import logging
import os
import os.path as osp
import threading

import torch

from uiqa_plugin.clip import factory
from uiqa_plugin.clip.model import ClipBackbone

logger = logging.getLogger('basicsr')

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
    model_name = factory.resolve_model_config(model_name)
    key = (model_name, pretrained_key, quick_gelu)
    with _SHARED_LOCK:
        clip = _SHARED.get(key)
        if clip is None:
            # Building draws random initial weights before loading the real ones: keep that off the
            # global RNG, so a model's own random init does not depend on whether CLIP was already loaded.
            with torch.random.fork_rng(devices=[]):
                model, info = factory.build_clip_model(model_name, pretrained, quick_gelu, cache_dir)
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
    from basicsr.utils.registry import ARCH_REGISTRY  # lazy: importing basicsr loads all its archs and models
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
