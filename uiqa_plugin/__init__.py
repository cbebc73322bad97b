"""uiqa-plugin: CLIP-based image quality and abstract perception for BasicSR.

``import uiqa_plugin`` is cheap (no torch): it makes basicsr importable on current torchvision
when basicsr is imported (see ``uiqa_plugin.compat``) and registers our archs, models, datasets,
losses, metrics and prompt ensembles in BasicSR's registries at their first lookup (building a
model, a dataset, validating options...). ``register()`` does it now.
"""
import importlib
import threading

from uiqa_plugin import compat as _compat
from uiqa_plugin.perception import ensembles as _ensembles  # noqa: F401  (the @ensemble prompt sets; cheap)
from uiqa_plugin.version import __version__  # noqa: F401

#: the subpackages whose modules register classes (BasicSR's registries, the @ensemble prompt sets)
REGISTERING = ('archs', 'data', 'losses', 'metrics', 'models', 'perception')
_registered = threading.Event()
_lock = threading.RLock()
_this_thread = threading.local()  # .busy: this thread is importing the modules right now


def register():
    """Import the registering subpackages (once; safe to call from anywhere, any number of times)."""
    if _registered.is_set():
        return
    with _lock:
        if _registered.is_set() or getattr(_this_thread, 'busy', False):
            return  # done, or a lookup made while registering: the modules being imported need no more
        _this_thread.busy = True
        try:
            _compat.apply()
            for name in REGISTERING:
                importlib.import_module(f'{__name__}.{name}')
            _registered.set()
        finally:
            _this_thread.busy = False


# The lazy imports below buy start-up time: `uiqa-score --help` and option errors answer without torch.
_compat.install_import_hooks(register)


def __getattr__(name):
    # The scoring API pulls in torch and open_clip: import it only when it is asked for.
    if name in ('create_metric', 'score_paths', 'load_trained_model'):
        register()
        from uiqa_plugin import api
        return getattr(api, name)
    if name in REGISTERING:
        register()
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
