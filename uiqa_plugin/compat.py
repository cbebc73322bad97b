"""Compatibility fixes for the PyPI release of BasicSR (1.4.2) on current torchvision, and the hooks
that let ``import uiqa_plugin`` stay cheap.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, a module removed in
torchvision 0.17. Upstream fixed it but never released the fix, so ``import basicsr``
fails on current torch. We register an alias module before basicsr is imported; a
torchvision that still has the module, or a basicsr that no longer needs it, is left
untouched.

Importing torch, torchvision and basicsr costs seconds; ``uiqa-score --help`` needs none of
them. So ``install_import_hooks`` defers both the alias and our registrations: the alias is
installed when basicsr is first imported, and our classes are registered when one of BasicSR's
registries first answers a lookup (``get``, ``in``, iteration), i.e. when work needs them.
"""
import importlib
import importlib.abc
import importlib.machinery
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


def _hook_registry(registry_module, register):
    """Make every lookup in a BasicSR ``Registry`` run ``register()`` first (it runs once, see uiqa_plugin)."""
    registry_cls = registry_module.Registry
    if getattr(registry_cls, '_uiqa_hooked', False):
        return
    for name in ('get', '__contains__', '__iter__', 'keys'):
        original = getattr(registry_cls, name)

        def lookup(self, *args, _original=original, **kwargs):
            register()
            return _original(self, *args, **kwargs)
        lookup.__name__, lookup.__doc__ = original.__name__, original.__doc__
        setattr(registry_cls, name, lookup)
    registry_cls._uiqa_hooked = True


class _BasicsrImportHook(importlib.abc.MetaPathFinder):
    """Before ``basicsr`` is imported: the torchvision alias. After ``basicsr.utils.registry`` is: the lookup hook."""

    def __init__(self, register):
        self.register = register
        self.applying = False

    def find_spec(self, name, path=None, target=None):
        if name == 'basicsr':
            if not self.applying:  # apply() itself looks basicsr up
                self.applying = True
                try:
                    apply()
                finally:
                    self.applying = False
            return None  # the normal finders import it
        if name != 'basicsr.utils.registry':
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader, register = spec.loader, self.register

        class HookedLoader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                _hook_registry(module, register)
        spec.loader = HookedLoader()
        return spec


def install_import_hooks(register):
    """Defer the basicsr fixes and ``register`` (our registrations) until basicsr is imported and looked up.

    If basicsr is already imported, the alias is moot and only the lookup hook is added.
    """
    if 'basicsr.utils.registry' in sys.modules:
        _hook_registry(sys.modules['basicsr.utils.registry'], register)
        return
    if not any(isinstance(f, _BasicsrImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _BasicsrImportHook(register))
