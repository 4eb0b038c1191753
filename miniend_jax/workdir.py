"""One run at a time in a workdir: an exclusive lock held by the running job.

The lock is `fcntl.flock` on `<workdir>/lock`, taken by process 0 (a multi-host job takes it once; every
process learns whether it got it). The kernel drops it when the process ends in any way, so a job killed
by a preemption (SIGKILL included) never blocks the resume that follows; the file, which names the holder
(host, pid, start time, command), is removed when the holder exits normally. A second launch on a held
workdir is refused before it reads weights or data, naming the holder. On a filesystem without `flock`
the run goes on unlocked, with a warning.

On object storage (`gs://`), which has no locks, the lock is a lease: the object `<workdir>/lock`,
created only if absent (a generation precondition: of two runs starting at once, one wins), naming the
holder and rewritten by it every `HEARTBEAT_SECONDS` with the time. A lock whose holder was on this host
and is no longer running (a kill -9 or a preemption of a VM that kept its name), or whose heartbeat is
older than `STALE_SECONDS` (its job is gone), is taken over; any other is refused, naming the holder, how
long ago it was last seen and the object to delete if that job is known to be gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time

from miniend_jax import files
from miniend_jax.errors import ConfigError

LOCK_FILE = "lock"
HEARTBEAT_SECONDS = 30
STALE_SECONDS = 120


def _holder_record(**more) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv),
            **more}


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
    os.write(fd, json.dumps(_holder_record()).encode())
    return fd


def _running_here(info: dict) -> bool:
    """Whether the holder `info` names is a live process of this host (True where that cannot be told)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


class _Lease:
    """The lock of a workdir on object storage (see the module docstring)."""

    def __init__(self, path: str):
        self.path, self.record = path, _holder_record(heartbeat=time.time())
        self._stop = threading.Event()
        self._thread = None

    def acquire(self) -> "_Lease":
        """Raises:
          ConfigError: a live run holds it."""
        for _ in range(2):
            try:
                files.create_exclusive(self.path, json.dumps(self.record).encode())
                break
            except FileExistsError:
                try:
                    info = json.loads(files.read_text(self.path))
                except FileNotFoundError:
                    continue  # released meanwhile
                except ValueError:
                    info = {}
                seen = time.time() - float(info.get("heartbeat", 0))
                if _running_here(info) and seen < STALE_SECONDS:
                    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
                    raise ConfigError(
                        f"workdir {files.parent(self.path)} is in use by pid {info.get('pid')} on {info.get('host')} "
                        f"since {started} ({str(info.get('command'))[:160]}), last seen {seen:.0f} s ago; wait for "
                        f"that run to end or stop it, or use another --workdir (if that job is gone, its lock "
                        f"expires {STALE_SECONDS - seen:.0f} s from now, or delete {self.path}).") from None
                print(f"warning: taking over the lock of a run that is gone (pid {info.get('pid')} on "
                      f"{info.get('host')}, last seen {seen:.0f} s ago)", flush=True)
                files.remove(self.path)
        else:
            raise ConfigError(f"workdir {files.parent(self.path)}: another run took its lock while this one "
                              f"started ({self.path}); use another --workdir or wait for that run.")
        self._thread = threading.Thread(target=self._beat, name="workdir-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                if json.loads(files.read_text(self.path)).get("started") != self.record["started"]:
                    print(f"warning: {self.path} was taken over by another run", flush=True)
                    return
                files.write_bytes(self.path, json.dumps({**self.record, "heartbeat": time.time()}).encode())
            except Exception as error:  # noqa: BLE001 - storage hiccups: try again at the next beat
                print(f"warning: could not renew {self.path} ({type(error).__name__}); retrying", flush=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        files.remove(self.path)


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds the workdir's lock for the body (see the module docstring). A workdir this call created is
    removed again if the body fails leaving it empty, so that a refused start leaves nothing behind.

    Raises:
      ConfigError: another run holds the lock (on every process of a multi-host job).
    """
    import jax
    cloud = files.is_cloud(workdir)
    workdir = files.absolute(workdir)
    created = not cloud and not os.path.exists(workdir)
    fd, lease, refusal = None, None, ""
    if jax.process_index() == 0:
        files.makedirs(workdir)
        try:
            if cloud:
                lease = _Lease(files.join(workdir, LOCK_FILE)).acquire()
            else:
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
        if lease is not None:
            lease.release()
        if failed and created and jax.process_index() == 0:
            _remove_if_empty(workdir)


def _remove_if_empty(workdir: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(workdir)
