"""Exclusive locks held for the life of a process, naming their holder to whoever finds them taken.

``flock`` on a lock file: the kernel drops the lock when the holder exits or is killed, so a
crashed run never leaves a stale lock and nothing has to be cleaned up. The file keeps the
holder's pid and host for the message a second process gets.
"""
import fcntl
import os
import socket


class LockHeldError(RuntimeError):
    """The lock is held by another live process; ``holder`` says which ('pid 123 on host')."""

    def __init__(self, path, holder):
        self.path, self.holder = path, holder
        super().__init__(f'{path} is locked by {holder}')


class FileLock:
    """``with FileLock(path): ...`` or ``acquire()`` / ``release()``; raises LockHeldError when taken."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = None

    def acquire(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        handle = open(self.path, 'a+', encoding='utf-8')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or 'an unknown process'
            handle.close()
            raise LockHeldError(self.path, holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f'pid {os.getpid()} on {socket.gethostname()}')
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
