"""Compatibility fixes for the PyPI release of BasicSR (1.4.2) on current torchvision.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, a module removed in
torchvision 0.17. Upstream fixed it but never released the fix, so ``import basicsr``
fails on current torch. We register an alias module before basicsr is imported; a
torchvision that still has the module, or a basicsr that no longer needs it, is left
untouched.
"""
import importlib
import importlib.util
import sys
import types

_ALIAS = 'torchvision.transforms.functional_tensor'


def install_torchvision_alias():
    """Make ``torchvision.transforms.functional_tensor`` importable if it is missing.

    Returns True when an alias was installed, False when nothing needed doing.
    """
    if _ALIAS in sys.modules:
        return False
    try:
        if importlib.util.find_spec(_ALIAS) is not None:
            return False
    except ModuleNotFoundError:  # torchvision itself is missing: basicsr will say so
        return False
    functional = importlib.import_module('torchvision.transforms.functional')
    alias = types.ModuleType(_ALIAS)
    alias.__doc__ = 'Alias of torchvision.transforms.functional installed by uiqa_plugin.compat.'
    alias.__dict__.update({k: v for k, v in vars(functional).items() if not k.startswith('__')})
    sys.modules[_ALIAS] = alias
    return True


def basicsr_needs_alias():
    """True if the installed basicsr imports the removed torchvision module."""
    spec = importlib.util.find_spec('basicsr')
    if spec is None or not spec.submodule_search_locations:
        return False
    import os
    path = os.path.join(list(spec.submodule_search_locations)[0], 'data', 'degradations.py')
    try:
        with open(path, encoding='utf-8') as f:
            return _ALIAS in f.read()
    except OSError:
        return False


def apply():
    """Apply every fix that the installed basicsr needs. Safe to call more than once."""
    if basicsr_needs_alias():
        install_torchvision_alias()
