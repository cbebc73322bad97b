"""The weights of a TorchScript archive (OpenAI's ``RN50.pt``), read without running anything in it.

``torch.jit.load`` compiles the archive's code and runs the ``__setstate__`` methods it
defines: loading a crafted ``.pt`` file runs its author's code. The archive is a zip:
``<name>/data.pkl`` pickles the module tree (objects of ``__torch__.*`` classes whose state
dicts hold submodules, tensors and plain values), ``<name>/data/<key>`` holds each tensor
storage as raw little-endian bytes, ``<name>/code/`` the TorchScript source, which lists each
class's ``__parameters__`` and ``__buffers__``. ``read_torchscript_weights`` unpickles
``data.pkl`` with an unpickler that builds tensors from those storages and records every
``__torch__`` object as plain data, and refuses any other Python global (what a pickle
payload needs) and any ``__setstate__`` in the code (what a TorchScript payload needs).
The result is what ``torch.jit.load(path).state_dict()`` gives, without executing the file.
"""
import collections
import os
import pickle
import re
import zipfile

import torch

#: tensor storages as TorchScript names them in persistent ids: torch.<Name>Storage -> dtype
_STORAGE_DTYPES = {
    'DoubleStorage': torch.float64, 'FloatStorage': torch.float32, 'HalfStorage': torch.float16,
    'BFloat16Storage': torch.bfloat16, 'LongStorage': torch.int64, 'IntStorage': torch.int32,
    'ShortStorage': torch.int16, 'CharStorage': torch.int8, 'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
}


# the code files are deflated; whatever the archive's size, they may unpack to this much
_MIN_ENTRY_LIMIT = 64 << 20


class UnsafeArchiveError(ValueError):
    """The archive holds something that loading it with ``torch.jit.load`` would execute."""


class ScriptObject:
    """A ``__torch__`` object of the archive as plain data: its class name and its attributes."""

    qualified_name = ''

    def __setstate__(self, state):  # pickle's BUILD: keep the state, run nothing
        self.state = state if isinstance(state, dict) else {'__state__': state}


def _identity(value, *args):
    return value


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError('a tensor without a storage from the archive')
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


# torch.jit pickles typed lists and type tags through these helpers; as data they are the value itself
_ALLOWED = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    **{('torch.jit._pickle', name): _identity for name in (
        'build_intlist', 'build_doublelist', 'build_boollist', 'build_tensorlist', 'build_strlist',
        'restore_type_tag')},
}


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, data, read_storage):
        super().__init__(data)
        self._read_storage = read_storage
        self._classes = {}

    def find_class(self, module, name):
        if module.startswith('__torch__'):
            qualified = f'{module}.{name}'
            if qualified not in self._classes:
                self._classes[qualified] = type(name, (ScriptObject,), {'qualified_name': qualified})
            return self._classes[qualified]
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafeArchiveError(f'it refers to the Python object {module}.{name}, which loading would call')

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage' and isinstance(pid[1], torch.dtype)):
            raise UnsafeArchiveError(f'unexpected persistent id {str(pid)[:80]}')
        return self._read_storage(str(pid[2]), pid[1])


def _class_members(zf, prefix):
    """{qualified class name: (parameter names, buffer names)} from the archive's code; refuses ``__setstate__``."""
    members = {}
    for name in zf.namelist():
        if not (name.startswith(prefix + 'code/') and name.endswith('.py')):
            continue
        source = zf.read(name).decode('utf-8', 'replace')
        if re.search(r'\bdef\s+__setstate__\b', source):
            raise UnsafeArchiveError(f'its code defines __setstate__ ({name}), which loading would run')
        module = name[len(prefix + 'code/'):-len('.py')].replace('/', '.')
        for match in re.finditer(r'^class\s+(\w+)\(.*?\):\n((?:[ \t]+.*\n?)*)', source, re.M):
            body = match.group(2)

            def names(key):
                found = re.search(rf'^\s+{key}\s*=\s*\[(.*?)\]', body, re.M)
                return re.findall(r'"([^"]*)"', found.group(1)) if found else []
            members[f'{module}.{match.group(1)}'] = (names('__parameters__'), names('__buffers__'))
    return members


def _state_dict(obj, members, prefix=''):
    """The module tree's parameters and buffers under dotted names, as ``Module.state_dict`` orders them."""
    out = collections.OrderedDict()
    params, buffers = members.get(obj.qualified_name, ((), ()))
    for key in list(params) + list(buffers):
        value = obj.state.get(key)
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
    for key, value in obj.state.items():
        if isinstance(value, ScriptObject):
            out.update(_state_dict(value, members, f'{prefix}{key}.'))
    return out


def _activation(obj):
    """True for a tree with QuickGELU, False with GELU, None with neither (first found, depth first)."""
    name = obj.qualified_name.rsplit('.', 1)[-1]
    if name in ('QuickGELU', 'GELU'):
        return name == 'QuickGELU'
    for value in obj.state.values():
        if isinstance(value, ScriptObject):
            found = _activation(value)
            if found is not None:
                return found
    return None


def read_torchscript_weights(path):
    """(state dict, QuickGELU?) of a TorchScript archive, without executing any of it.

    The state dict holds the parameters and persistent buffers of the module tree, on the
    CPU, in the archive's dtypes. QuickGELU?: True / False for the activation the archive's
    modules use, None when it uses neither. Raises UnsafeArchiveError for an archive that
    loading would run code from, ValueError / zipfile.BadZipFile for damaged ones.
    """
    with zipfile.ZipFile(path) as zf:
        # torch stores tensors uncompressed: an entry that unpacks to far more than the file holds is a zip bomb
        limit = max(os.path.getsize(path), _MIN_ENTRY_LIMIT)
        for info in zf.infolist():
            if info.file_size > limit:
                raise ValueError(f'its entry {info.filename} unpacks to {info.file_size} bytes, more than the archive '
                                 f'of {os.path.getsize(path)} bytes can hold uncompressed; refused')
        pickles = [n for n in zf.namelist() if n.endswith('data.pkl') and n.count('/') == 1]
        if len(pickles) != 1:
            raise ValueError('not a TorchScript archive (no <name>/data.pkl)')
        prefix = pickles[0][:-len('data.pkl')]
        byteorder = prefix + 'byteorder'
        if byteorder in zf.namelist() and zf.read(byteorder).decode(errors='replace').strip() != 'little':
            raise ValueError('big-endian tensor data is not supported')
        members = _class_members(zf, prefix)
        storages = {}

        def read_storage(key, dtype):
            if key not in storages:
                raw = bytearray(zf.read(f'{prefix}data/{key}'))
                storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            return storages[key]
        root = _ArchiveUnpickler(zf.open(pickles[0]), read_storage).load()
    if not isinstance(root, ScriptObject):
        raise ValueError('its data.pkl does not hold a scripted module')
    return _state_dict(root, members), _activation(root)
