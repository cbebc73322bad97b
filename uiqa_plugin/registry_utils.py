"""Plugin discovery: import every module of a subpackage whose name ends with a suffix.

BasicSR discovers archs/models/datasets/losses only inside its own folders; a plugin
imports its own modules so that their ``@REGISTRY.register()`` decorators run.
"""
import importlib
import os.path as osp
import pkgutil


def import_modules(package_name, package_dir, suffix):
    """Import ``package_name.<m>`` for every module ``m`` in ``package_dir`` ending in ``suffix``."""
    modules = []
    for info in pkgutil.iter_modules([package_dir]):
        if info.name.endswith(suffix):
            modules.append(importlib.import_module(f'{package_name}.{info.name}'))
    return modules


def here(file):
    return osp.dirname(osp.abspath(file))
