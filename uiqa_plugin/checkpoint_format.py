"""What a checkpoint of our trained models holds, and the one way to read one back.

A checkpoint (``experiments/<name>/models/net_g_<iter>.pth``) is a plain dict of tensors and plain
values, read with ``weights_only`` (``checkpoint_io``):

- ``params``, and ``params_ema`` when the run kept an average: what trains, never the frozen CLIP;
- ``network_g``: the arch options, with the CLIP config and weight files as absolute paths (a
  checkpoint moved to another machine names files that may not be there: ``missing_clip_paths``);
- ``attribute_names``, ``preprocessing`` (views, resize, mean/std or a transforms list) and
  ``view_options``: what rebuilds the exact inputs the model was validated on;
- ``imports``: the user modules its arch needs, recorded and never imported automatically.
"""
import os.path as osp
from copy import deepcopy

import torch

from uiqa_plugin.checkpoint_io import TRUST_HINT, check_finite, load_checkpoint, looks_like_path
from uiqa_plugin.options import check_checkpoint_options

#: arch options that name CLIP weights; stored as absolute paths when they are files
CLIP_PATH_KEYS = ('clip_model', 'clip_pretrained')


def absolute_clip_paths(net_opt):
    """``net_opt`` with the CLIP config / weight files that exist here as absolute paths."""
    net_opt = deepcopy(net_opt)
    for key in CLIP_PATH_KEYS:
        value = net_opt.get(key)
        if isinstance(value, str) and osp.exists(osp.expanduser(value)):
            net_opt[key] = osp.abspath(osp.expanduser(value))
    return net_opt


def missing_clip_paths(net_opt):
    """(key, path) of CLIP files named by ``net_opt`` that do not exist here."""
    return [(k, net_opt[k]) for k in CLIP_PATH_KEYS
            if looks_like_path(net_opt.get(k)) and not osp.exists(osp.expanduser(net_opt[k]))]


def missing_clip_message(source, missing, how):
    """The one wording of "the CLIP files this checkpoint names are not here"; ``how`` says how to point at them."""
    return (f'{source}: it was trained with CLIP files that are not here: ' +
            ', '.join(f'{k} {v}' for k, v in missing) + f'; {how}')


def checkpoint_payload(params, network_g, preprocessing, imports, attribute_names=(), params_ema=None,
                       param_key='params'):
    """The checkpoint dict of a trained network (``params``: its state dict on the CPU)."""
    payload = {param_key: params}
    if params_ema is not None:
        payload['params_ema'] = params_ema
    payload.update({'network_g': absolute_clip_paths(network_g), 'attribute_names': list(attribute_names),
                    'preprocessing': preprocessing,  # lets uiqa-score rebuild the exact views
                    'view_options': deepcopy((preprocessing or {}).get('views')),
                    'imports': list(imports or [])})  # user modules the arch needs (never auto-imported)
    return payload


def read_checkpoint(path, trust=False):
    """The checkpoint at ``path`` with every check a checkpoint gets before a model is built from it.

    Read as data (``weights_only``; ``trust`` allows full unpickling). When it stores arch options,
    ``network_g``, ``preprocessing`` and ``view_options`` pass the option-file rules (the returned
    ``network_g`` is a checked copy); ``params`` / ``params_ema``, where present, must be state dicts
    of finite tensors. A plain state dict (published weights) is returned as it is.
    Raises ``CheckpointReadError`` / ``OptionError`` / ValueError, each naming the file and the key.
    """
    ckpt = load_checkpoint(path, trust=trust, trust_hint=TRUST_HINT)
    if not isinstance(ckpt, dict) or not ({'params', 'params_ema', 'network_g'} & set(ckpt)):
        return ckpt
    if 'network_g' in ckpt:
        ckpt = dict(ckpt, network_g=check_checkpoint_options(ckpt, path, ckpt.get('imports')))
    for key in ('params', 'params_ema'):
        value = ckpt.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in value.items()):
            raise ValueError(f'{path}: "{key}" must be a state dict (parameter name -> tensor), got '
                             f'{type(value).__name__}')
        check_finite(value, f'{path} ({key})')
    return ckpt
