"""One live training per experiment folder: an exclusive ``flock`` held for the life of the run."""
import hashlib
import os.path as osp

from uiqa_plugin.file_lock import FileLock, LockHeldError


class ExperimentInUseError(RuntimeError):
    """Another live training writes into the same experiment folder."""


class ExperimentLock:
    """An exclusive lock on experiments/<name>, held for the life of the training process.

    The lock file sits beside the folder (``experiments/.<name>.lock``), so BasicSR's renaming of
    an old folder to ``_archived_`` cannot move it. It is keyed on the real path of the folder:
    two spellings of one folder (``./lk`` and ``lk``, a symbolic link) take the same lock.
    ``flock`` is released by the kernel when the holder dies, so the lock of a killed run is
    taken over without any clean-up.
    """

    def __init__(self, experiments_dir, name):
        folder = osp.realpath(osp.join(experiments_dir, name))
        parent, base = osp.split(folder)
        if osp.realpath(experiments_dir) != parent:  # a link to a folder elsewhere: key on its real path
            base = f'{base}-{hashlib.sha1(folder.encode()).hexdigest()[:8]}'
        self.path = osp.join(osp.realpath(experiments_dir), f'.{base}.lock')
        self.name = name
        self._lock = None

    def acquire(self):
        try:
            self._lock = FileLock(self.path).acquire()
        except LockHeldError as exc:
            raise ExperimentInUseError(f'experiment {self.name!r} is in use by a running training ({exc.holder}; lock '
                                       f'file {self.path}). Wait for it to end, stop it, or give this run another '
                                       'name.') from None
        return self

    def release(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None
