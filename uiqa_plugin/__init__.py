"""uiqa-plugin: CLIP-based image quality and abstract perception for BasicSR.

Importing this package makes basicsr importable on current torchvision (see
``uiqa_plugin.compat``) and registers our archs, models, datasets, losses and metrics in
BasicSR's registries.
"""
from uiqa_plugin import compat as _compat

_compat.apply()

from uiqa_plugin.version import __version__  # noqa: E402
from uiqa_plugin import archs, data, losses, metrics, models  # noqa: E402,F401
from uiqa_plugin import perception  # noqa: E402,F401  (registers the @ensemble prompt sets)


def __getattr__(name):
    # The scoring API pulls in open_clip; import it only when it is asked for.
    if name in ('create_metric', 'score_paths', 'load_trained_model'):
        from uiqa_plugin import api
        return getattr(api, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
