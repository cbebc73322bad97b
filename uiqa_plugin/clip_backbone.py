"""Former home of the CLIP code, now the ``uiqa_plugin.clip`` package; these names stay importable from here."""
from uiqa_plugin.clip import *  # noqa: F401,F403
from uiqa_plugin.clip import __all__  # noqa: F401
