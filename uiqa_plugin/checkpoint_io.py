"""Reading and writing checkpoint files safely: no code runs from a file, no half-written file.

Every file a user hands us (our checkpoints, training states, published weights) is read
with ``torch.load(weights_only=True)``: tensors, containers and plain numbers only, so a
pickle payload planted in a ``.pth`` cannot execute. A file that really needs full
unpickling is refused with ``UnsafeCheckpointError`` unless the caller passes
``trust=True`` (a deliberate ``--trust-checkpoint`` from the user).

Writes go to a unique temporary file in the same folder, are fsynced, then renamed over
the target: a kill during the save leaves the old file (or none), never a truncated one.
"""
import os
import os.path as osp
import pickle
import tempfile

import torch


class CheckpointReadError(ValueError):
    """A checkpoint file is missing, truncated or not a PyTorch file; the message names it."""


class UnsafeCheckpointError(CheckpointReadError):
    """The file needs full unpickling (it may run code); refused unless trusted on purpose."""


def load_checkpoint(path, map_location='cpu', trust=False, what='checkpoint', trust_hint='--trust-checkpoint'):
    """``torch.load`` of a user file with ``weights_only=True``.

    trust: allow full unpickling for files the user vouches for (never the default).
    what: how the message names the file ('checkpoint', 'training state', ...).
    trust_hint: how the user asks for trust in the interface at hand (a flag or a YAML key).
    Raises CheckpointReadError (missing / unreadable) or UnsafeCheckpointError.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise CheckpointReadError(f'{what} {path}: file not found')
    if osp.getsize(path) == 0:
        raise CheckpointReadError(f'{what} {path}: the file is empty (0 bytes; an interrupted save?)')
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except Exception as exc:  # torch raises several kinds for truncated, foreign or unsafe files
        # A reference to a Python global (a class, a function) is what could run code; other unpickler
        # errors ("Unsupported operand") come from garbage such as a half-written file.
        if not trust and isinstance(exc, pickle.UnpicklingError) and 'GLOBAL' in str(exc):
            raise UnsafeCheckpointError(
                f'{what} {path}: refused, it holds Python objects that loading would have to execute '
                f'(only tensors and plain containers load safely). If you trust where this file comes from, '
                f'pass {trust_hint} to load it anyway.') from exc
        raise CheckpointReadError(f'{what} {path}: cannot be read as a PyTorch file '
                                  f'(truncated or not a checkpoint? {type(exc).__name__}: {exc})') from exc


def save_checkpoint(obj, path):
    """``torch.save`` to a unique temporary file beside ``path``, fsync, then an atomic rename."""
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=osp.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    return path


class CheckpointWriteError(OSError):
    """A checkpoint or training state could not be written; the message names the file and its folder."""

    @classmethod
    def writing(cls, what, path, exc):
        """The error for ``exc`` (an OSError, or torch's RuntimeError when the disk fills) while writing ``path``."""
        reason = getattr(exc, 'strerror', None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        return cls(f'cannot write the {what} file {path}: {reason} (is {osp.dirname(path)} writable, '
                   f'is the disk full?)')
