"""One run at a time in a workdir: an exclusive lock held by the running job.

The lock is `fcntl.flock` on `<workdir>/lock`, taken by process 0 (a multi-host job takes it once; every
process learns whether it got it). The kernel drops it when the process ends in any way, so a job killed
by a preemption (SIGKILL included) never blocks the resume that follows; the file, which names the holder
(host, pid, start time, command), is removed when the holder exits normally. A second launch on a held
workdir is refused before it reads weights or data, naming the holder. On a filesystem without `flock`,
and on object storage (`gs://`), the run goes on unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time

from miniend_jax import files
from miniend_jax.errors import ConfigError

LOCK_FILE = "lock"


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            info = json.load(f)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        return f"pid {info['pid']} on {info['host']} since {started} ({info['command'][:160]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _acquire(workdir: str) -> int | None:
    """The file descriptor holding the lock, or None where the filesystem has no `flock`.

    Raises:
      ConfigError: another process holds it.
    """
    import fcntl
    path = os.path.join(workdir, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"workdir {workdir} is in use by {_holder(path)}; wait for that run to end or stop "
                              f"it, or use another --workdir (the lock is {path}).") from None
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                print(f"warning: {path}: this filesystem cannot lock files ({error.strerror}); a second run "
                      "started on this workdir would not be refused", flush=True)
                return None
            raise
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                             "command": " ".join(sys.argv)}).encode())
    return fd


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds the workdir's lock for the body (see the module docstring). A workdir this call created is
    removed again if the body fails leaving it empty, so that a refused start leaves nothing behind.

    Raises:
      ConfigError: another run holds the lock (on every process of a multi-host job).
    """
    import jax
    if files.is_cloud(workdir):
        if jax.process_index() == 0:
            print(f"warning: {workdir} is on object storage, which has no file locks: a second run started on "
                  "this workdir would not be refused", flush=True)
        yield
        return
    workdir = os.path.abspath(workdir)
    created = not os.path.exists(workdir)
    fd, refusal = None, ""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        try:
            fd = _acquire(workdir)
        except ConfigError as error:
            refusal = str(error)
    if jax.process_count() > 1:  # all processes stop, or none
        import numpy as np
        from jax.experimental import multihost_utils
        refused = multihost_utils.process_allgather(np.asarray(bool(refusal), np.int32))
        if np.any(refused) and not refusal:
            refusal = f"workdir {workdir} is in use by another run (process 0 could not lock it)"
    if refusal:  # (a held workdir existed before this call: nothing to remove)
        raise ConfigError(refusal)
    failed = True
    try:
        yield
        failed = False
    finally:
        if fd is not None:
            os.unlink(os.path.join(workdir, LOCK_FILE))  # while still held: no other run can hold this file
            os.close(fd)
        if failed and created and jax.process_index() == 0:
            _remove_if_empty(workdir)


def _remove_if_empty(workdir: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(workdir)
