"""Registered archs: every module named `*_arch.py` here is imported so that it registers."""
from uiqa_plugin.registry_utils import here, import_modules

_modules = import_modules(__name__, here(__file__), '_arch')
