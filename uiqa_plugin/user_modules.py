"""Users' own modules (archs, models, datasets, losses, metrics) imported before options are read.

BasicSR discovers registered classes only inside its own folders, so a user's
``@ARCH_REGISTRY.register() class MyNet`` in ``my_arch.py`` is unknown to our entry points
unless it is imported first. Two ways to name such modules, both accepted by ``train.py``,
``test.py`` and ``uiqa-score``:

- ``--import MODULE`` on the command line (repeatable; ``--import a,b`` also works);
- a top-level option ``imports: [my_pkg.my_arch, archs/my_loss.py]``.

A name is a dotted module path (found on ``PYTHONPATH`` or in the working directory) or a
``.py`` file path (relative to the working directory). Checkpoints record the modules a run
imported (``recorded_imports``), but scoring never imports them by itself: a checkpoint is
data, and importing a module named in a file would run code chosen by that file. The
error for an unknown arch names the recorded modules and the flag that loads them.
"""
import importlib
import importlib.util
import os
import os.path as osp
import sys

__all__ = ['UserModuleError', 'import_user_modules', 'split_names', 'pop_import_args', 'import_from_argv',
           'recorded_imports', 'unknown_arch_message']

#: modules imported in this process through ``import_user_modules`` (names or absolute .py paths)
IMPORTED = []


class UserModuleError(ImportError):
    """A user module could not be imported; the message names it and the reason."""


def split_names(names):
    """A name, a list or comma-separated names -> list of names."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        out.extend(part.strip() for part in str(name).split(',') if part.strip())
    return out


def _import_file(path):
    path = osp.abspath(osp.expanduser(path))
    if not osp.isfile(path):
        raise UserModuleError(f'{path}: file not found')
    name = osp.splitext(osp.basename(path))[0]
    for module in list(sys.modules.values()):  # the same file twice would register its classes twice
        if getattr(module, '__file__', None) and osp.abspath(module.__file__) == path:
            return module
    if name in sys.modules:
        name = f'uiqa_user_{abs(hash(path))}_{name}'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_user_modules(names):
    """Import each module (dotted name or .py path); returns the modules. Raises UserModuleError."""
    # no import needed for basicsr's compatibility fix: importing this package installed it (uiqa_plugin.compat)
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.append(os.getcwd())  # scripts run with their own folder first; users expect the working dir too
    modules = []
    for name in split_names(names):
        is_file = name.endswith('.py') or os.sep in name or '/' in name
        try:
            module = _import_file(name) if is_file else importlib.import_module(name)
        except UserModuleError:
            raise
        except Exception as exc:
            raise UserModuleError(f'cannot import {name!r}: {type(exc).__name__}: {exc}') from exc
        record = osp.abspath(osp.expanduser(name)) if is_file else name
        if record not in IMPORTED:
            IMPORTED.append(record)
        modules.append(module)
    return modules


def pop_import_args(argv):
    """(argv without ``--import X`` / ``--import=X``, the named modules) — BasicSR's parser rejects the flag."""
    rest, names, argv = [], [], list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == '--import':
            if i + 1 >= len(argv):
                raise UserModuleError('--import needs a module name or a .py file')
            names.extend(split_names(argv[i + 1]))
            i += 2
            continue
        if arg.startswith('--import='):
            names.extend(split_names(arg.split('=', 1)[1]))
        else:
            rest.append(arg)
        i += 1
    return rest, names


def import_from_argv(argv):
    """Import the ``--import`` modules of ``argv`` and return ``argv`` without them (exits on an error)."""
    rest, names = pop_import_args(argv)
    try:
        import_user_modules(names)
    except UserModuleError as exc:
        sys.exit(f'error: --import: {exc}')
    return rest


def recorded_imports(opt=None):
    """The user modules a checkpoint should name: ``opt['imports']`` and every ``--import`` of this process."""
    names = []
    for name in split_names((opt or {}).get('imports')) + IMPORTED:
        if name.endswith('.py') or '/' in name:
            name = osp.abspath(osp.expanduser(name))
        if name not in names:
            names.append(name)
    return names


def unknown_arch_message(checkpoint, arch, imports=None, flag='--import'):
    """What to tell a user whose checkpoint names an arch that nothing registered."""
    message = f'{checkpoint}: arch {arch!r} is not registered'
    if imports:
        listed = ' '.join(f'{flag} {name}' for name in imports)
        message += (f'; the run that wrote it imported {list(imports)}: pass {listed} (modules named in a '
                    'checkpoint are never imported automatically: that would run code chosen by the file)')
    else:
        message += f'; if it is your own arch, import its module first ({flag} my_pkg.my_arch or {flag} my_arch.py)'
    return message
