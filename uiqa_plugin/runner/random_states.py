"""Every random state a training step draws from, saved and restored for an exact resume.

Saved states are plain tensors, lists and numbers (``to_plain``), so that training states
load with ``torch.load(weights_only=True)``.
"""
import random

import numpy as np
import torch


def rng_state():
    """The states of Python's, NumPy's and torch's generators (CPU, and every CUDA device)."""
    state = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore a state of ``rng_state`` (CUDA states only on a machine with as many GPUs)."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


def rng_to_plain(state):
    """``state`` as tensors, lists and numbers, readable with ``weights_only`` loading."""
    version, internal, gauss = state['python']
    kind, keys, pos, has_gauss, cached = state['numpy']
    out = {'python': [version, list(internal), gauss], 'torch': state['torch'],
           'numpy': [kind, torch.from_numpy(keys.astype('int64')), int(pos), int(has_gauss), float(cached)]}
    if 'cuda' in state:
        out['cuda'] = list(state['cuda'])
    return out


def rng_from_plain(plain):
    """The inverse of ``rng_to_plain``."""
    version, internal, gauss = plain['python']
    kind, keys, pos, has_gauss, cached = plain['numpy']
    # Training states are loaded onto the training device; random states live on the CPU.
    state = {'python': (version, tuple(internal), gauss), 'torch': plain['torch'].cpu(),
             'numpy': (kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached)}
    if 'cuda' in plain:
        state['cuda'] = [s.cpu() for s in plain['cuda']]
    return state
