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

# torch is imported by the functions that load or save (lazy: option checking and --help, which use
# looks_like_path, answer without paying torch's start-up).


#: how a user vouches for a file that needs full unpickling, on the command line or in an option file
TRUST_HINT = '--trust-checkpoint (or path.trust_checkpoint: true in the option file)'

#: suffixes of files that option values name (weights, CLIP model configs)
PATH_SUFFIXES = ('.json', '.pt', '.pth', '.bin', '.safetensors')


def looks_like_path(value):
    """Whether an option value is written as a file path (a separator or a file suffix), not a name or a tag."""
    return isinstance(value, str) and ('/' in value or os.sep in value or value.endswith(PATH_SUFFIXES))


class CheckpointReadError(ValueError):
    """A checkpoint file is missing, truncated or not a PyTorch file; the message names it."""


class UnsafeCheckpointError(CheckpointReadError):
    """The file needs full unpickling (it may run code); refused unless trusted on purpose."""


class NonFiniteWeightsError(CheckpointReadError):
    """A weight file holds NaN or infinite values: every score computed with it would be NaN or meaningless."""


def check_finite(state_dict, what):
    """Raise NonFiniteWeightsError naming ``what`` and the first keys of ``state_dict`` with NaN or inf values."""
    import torch
    bad = [f'{key} ({int((~torch.isfinite(value)).sum())} of {value.numel()} values)'
           for key, value in state_dict.items()
           if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        more = f' and {len(bad) - 3} more' if len(bad) > 3 else ''
        raise NonFiniteWeightsError(f'{what}: NaN or infinite weights in {", ".join(bad[:3])}{more}; '
                                    'the file is damaged or its training diverged: use an earlier checkpoint')


def load_checkpoint(path, map_location='cpu', trust=False, what='checkpoint', trust_hint='--trust-checkpoint'):
    """``torch.load`` of a user file with ``weights_only=True``.

    trust: allow full unpickling for files the user vouches for (never the default).
    what: how the message names the file ('checkpoint', 'training state', ...).
    trust_hint: how the user asks for trust in the interface at hand (a flag or a YAML key).
    Raises CheckpointReadError (missing / unreadable) or UnsafeCheckpointError.
    """
    import torch
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


def current_umask():
    """The process umask, read without changing it (``os.umask`` can only be read by setting it: a race
    with other threads creating files)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path, write, mode='wb', **open_kwargs):
    """Call ``write(file)`` on a unique temporary file beside ``path``, fsync, give it the permissions of a
    file created normally (0666 minus the umask: ``mkstemp`` makes 0600 files), then rename it over ``path``.

    A kill during the write leaves the old file (or none), never a truncated one; concurrent
    writers of one path each leave a whole file (the last rename wins). Returns ``path``.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=osp.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_checkpoint(obj, path):
    """``torch.save`` through ``write_atomically``: fsynced, renamed into place, permissions as the umask says."""
    import torch
    return write_atomically(path, lambda f: torch.save(obj, f))
