"""One file layer for every path a run reads or writes: local, or object storage (`gs://`, and `s3://`
where `s3fs` is installed).

Cloud paths go through fsspec (`gcsfs` for `gs://`): it is the layer the rest of the stack already shares.
orbax reaches storage through etils `epath`, which this package points at the same fsspec backend
(`EPATH_USE_TF=false`, set in `miniend_jax/__init__.py`) instead of `tf.io.gfile`, so TensorFlow stays out
of every path that does not read data, and one setting points every library at a GCS emulator:
`STORAGE_EMULATOR_HOST` (gcsfs's; `miniend_jax/__init__.py` passes it on to tensorstore, which writes
orbax's arrays, as `TENSORSTORE_GCS_HTTP_URL`). Local paths use the operating system directly. Paths stay
strings everywhere (in configs, records and messages).

Atomicity on object storage, which has no rename: an object is written whole or not at all (a single
upload that a kill cuts short creates nothing), so a single file written with `write_text` is atomic on
both kinds (local: a temporary file and `os.replace`). A directory is written file by file with the file
that makes it usable last (`copy_tree(..., last=...)`: `config.json` of a HF directory), and a record
that points at it (`best.json`) after that; orbax marks its own finished checkpoints
(`commit_success.txt`). Appending (`append_text`) rewrites the object on object storage.

Libraries that read or write only local files get a local copy (`local_copy`, cached under
`cache_dir()` by size and generation: SentencePiece and seqio's vocabulary, safetensors, the HF tokenizer,
TensorFlow's checkpoint of the input position) or write into a local folder that is then uploaded
(TensorFlow's input position, a HF export; seqio's evaluation logs through a `LocalMirror`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterator

CLOUD_PREFIXES = ("gs://", "s3://")


def is_cloud(path: str) -> bool:
    """Whether `path` names object storage (`gs://...`, `s3://...`)."""
    return str(path).startswith(CLOUD_PREFIXES)


def _fs(path: str):
    """(filesystem, path without scheme) of a cloud path."""
    import fsspec
    return fsspec.core.url_to_fs(path)


def _scheme(path: str) -> str:
    return path.split("://", 1)[0] + "://"


def absolute(path: str) -> str:
    """`path` made absolute (`~` expanded) where local; a cloud path as it is, without a trailing `/`."""
    if is_cloud(path):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def join(path: str, *names: str) -> str:
    """`path/name/...` for either kind (a cloud path is joined with `/`)."""
    if is_cloud(path):
        return "/".join([path.rstrip("/"), *(n.strip("/") for n in names)])
    return os.path.join(path, *names)


def parent(path: str) -> str:
    """The directory holding `path`."""
    if is_cloud(path):
        scheme, rest = path.rstrip("/").split("://", 1)
        return f"{scheme}://{rest.rsplit('/', 1)[0]}"  # a bucket is its own parent
    return os.path.dirname(absolute(path))


def _any_fs(path: str):
    """(filesystem, path) of either kind: fsspec's local filesystem for a local path (`~` expanded)."""
    return _fs(path if is_cloud(path) else os.path.expanduser(path))


def exists(path: str) -> bool:
    if not path:  # fsspec would read "" as the current directory
        return False
    fs, p = _any_fs(path)
    return fs.exists(p)


def isdir(path: str) -> bool:
    """Whether `path` is a directory (on object storage: a prefix holding objects)."""
    if not path:  # fsspec would read "" as the current directory
        return False
    fs, p = _any_fs(path)
    return fs.isdir(p)


def isfile(path: str) -> bool:
    if not path:  # fsspec would read "" as the current directory
        return False
    fs, p = _any_fs(path)
    return fs.isfile(p)


def getsize(path: str) -> int:
    fs, p = _any_fs(path)
    return int(fs.size(p))


def makedirs(path: str) -> None:
    """Creates a local directory and its parents; nothing on object storage (prefixes need no creating)."""
    if not is_cloud(path):
        os.makedirs(os.path.expanduser(path), exist_ok=True)


def listdir(path: str) -> list[str]:
    """The names directly under directory `path`, sorted ([] where it does not exist)."""
    if is_cloud(path):
        fs, p = _fs(path)
        if not fs.isdir(p):
            return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(p, detail=False, refresh=True)})
    path = os.path.expanduser(path)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def glob(pattern: str) -> list[str]:
    """The files (not directories) matching a glob pattern, sorted, with the pattern's scheme."""
    if is_cloud(pattern):
        fs, p = _fs(pattern)
        return sorted(_scheme(pattern) + f for f in fs.glob(p) if fs.isfile(f))
    import glob as glob_lib
    return sorted(f for f in glob_lib.glob(os.path.expanduser(pattern)) if os.path.isfile(f))


def walk_files(path: str) -> list[str]:
    """Every file under directory `path`, as paths relative to it, sorted."""
    if is_cloud(path):
        fs, p = _fs(path)
        root = p.rstrip("/") + "/"
        return sorted(f[len(root):] for f in fs.find(p) if f.startswith(root))
    path = os.path.expanduser(path)
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, names in os.walk(path) for f in names)


def open_file(path: str, mode: str = "r", **kwargs):
    """A file object of either kind (`mode` "r", "rb", "w", "wb"; writing an object uploads it on close)."""
    if is_cloud(path):
        import fsspec
        return fsspec.open(path, mode, **kwargs).open()
    return open(os.path.expanduser(path), mode, **kwargs)


def read_bytes(path: str, start: int = 0, length: int | None = None) -> bytes:
    """The bytes of `path` (or `length` bytes from `start`)."""
    if is_cloud(path):
        fs, p = _fs(path)
        end = None if length is None else start + length
        return fs.cat_file(p, start=start or None, end=end)
    with open(os.path.expanduser(path), "rb") as f:
        f.seek(start)
        return f.read() if length is None else f.read(length)


def read_text(path: str) -> str:
    """The UTF-8 text of `path` (UnicodeDecodeError where it is not UTF-8)."""
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all (see the module docstring); creates local parent directories."""
    if is_cloud(path):
        fs, p = _fs(path)
        fs.pipe_file(p, data)
        return
    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staged = f"{path}.{os.getpid()}.tmp"
    try:
        with open(staged, "wb") as f:
            f.write(data)
        os.replace(staged, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


def create_exclusive(path: str, data: bytes) -> None:
    """Creates `path` holding `data` only if nothing is there (object storage: a generation precondition,
    so of two writers one wins).

    Raises:
      FileExistsError: something is already at `path`.
    """
    if is_cloud(path):
        fs, p = _fs(path)
        fs.pipe_file(p, data, mode="create")
        return
    with open(os.path.expanduser(path), "xb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    """`write_bytes` of UTF-8 `text`."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value, **dump_kwargs) -> None:
    """`value` as JSON, written whole or not at all."""
    write_text(path, json.dumps(value, **dump_kwargs))


def append_text(path: str, text: str) -> None:
    """Appends `text` (local: in place; object storage: the object is rewritten with `text` added)."""
    if is_cloud(path):
        old = read_bytes(path) if exists(path) else b""
        write_bytes(path, old + text.encode("utf-8"))
        return
    with open(os.path.expanduser(path), "a", encoding="utf-8") as f:
        f.write(text)


def last_byte(path: str) -> bytes:
    """The last byte of a file (b"" when it is empty or missing)."""
    if not exists(path):
        return b""
    size = getsize(path)
    return read_bytes(path, size - 1, 1) if size else b""


def remove(path: str) -> None:
    """Removes a file; nothing where it does not exist."""
    if is_cloud(path):
        fs, p = _fs(path)
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(p)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.expanduser(path))


def rmtree(path: str) -> None:
    """Removes a directory and everything under it; nothing where it does not exist."""
    if is_cloud(path):
        fs, p = _fs(path)
        with contextlib.suppress(FileNotFoundError):
            if fs.exists(p):
                fs.rm(p, recursive=True)
        return
    shutil.rmtree(os.path.expanduser(path), ignore_errors=True)


def move_tree(source: str, target: str) -> None:
    """Moves a directory (local: one rename; object storage: copy, then delete the source)."""
    if is_cloud(source):
        fs, p = _fs(source)
        fs.mv(p, _fs(target)[1], recursive=True)
        return
    os.rename(source, target)


def copy_file(source: str, target: str) -> None:
    """Copies one file between any two kinds of path (the target written whole or not at all)."""
    source, target = (p if is_cloud(p) else os.path.expanduser(p) for p in (source, target))
    if not is_cloud(target):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if not is_cloud(source) and not is_cloud(target):
        shutil.copyfile(source, target)
    elif is_cloud(target) and not is_cloud(source):
        fs, p = _fs(target)
        fs.put_file(source, p)
    elif is_cloud(source) and not is_cloud(target):
        fs, p = _fs(source)
        fs.get_file(p, target + ".part")
        os.replace(target + ".part", target)
    else:
        write_bytes(target, read_bytes(source))


def copy_tree(source: str, target: str, *, last: str | None = None) -> None:
    """Copies every file under directory `source` into directory `target` (either kind of path, either
    way), the file named `last` after all the others, so that a reader that needs `last` never sees the
    directory half written."""
    names = sorted(walk_files(source), key=lambda n: n == last)
    for name in names:
        copy_file(join(source, name), join(target, name))


@contextlib.contextmanager
def local_dir_for(target: str) -> Iterator[str]:
    """A local directory to write into for a library that writes only local files: `target` itself where
    it is local (created), else a temporary directory uploaded to `target` when the body ends without an
    error."""
    if not is_cloud(target):
        makedirs(target)
        yield os.path.expanduser(target)
        return
    with tempfile.TemporaryDirectory(prefix="miniend_upload.") as tmp:
        yield tmp
        copy_tree(tmp, target)


class LocalMirror:
    """A local folder standing in for a cloud folder `target`, for a library that writes only local files
    and appends to what it wrote before (seqio's evaluation loggers): created holding `target`'s files;
    `push()` uploads the files that are new or changed since the last push (or the download). The local
    folder is removed with the object."""

    def __init__(self, target: str):
        self.target = target
        self._folder = tempfile.TemporaryDirectory(prefix="miniend_mirror.")
        self.path = self._folder.name
        if isdir(target):
            copy_tree(target, self.path)
        self._pushed = self._stamps()

    def _stamps(self) -> dict[str, tuple[int, int]]:
        return {name: (os.stat(os.path.join(self.path, name)).st_size,
                       os.stat(os.path.join(self.path, name)).st_mtime_ns) for name in walk_files(self.path)}

    def push(self) -> None:
        stamps = self._stamps()
        for name, stamp in stamps.items():
            if self._pushed.get(name) != stamp:
                copy_file(os.path.join(self.path, name), join(self.target, name))
        self._pushed = stamps


def cache_dir() -> str:
    """Where local copies of cloud inputs are kept: `$MINIEND_CACHE_DIR`, else `~/.cache/miniend_jax`."""
    return os.environ.get("MINIEND_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "miniend_jax")


def _version(fs, p: str) -> dict:
    info = fs.info(p)
    return {"size": info.get("size"), "version": info.get("generation") or info.get("ETag")
            or info.get("etag") or info.get("mtime") or info.get("updated")}


def version(path: str) -> dict:
    """What changes when a file is rewritten: its size and its generation (object storage) or
    modification time (local)."""
    if is_cloud(path):
        fs, p = _fs(path)
        return _version(fs, p)
    stat = os.stat(os.path.expanduser(path))
    return {"size": stat.st_size, "version": stat.st_mtime_ns}


def local_copy(path: str) -> str:
    """A local path holding what `path` holds: `path` itself where it is local; for a cloud file or
    directory, a copy under `cache_dir()`, downloaded again only when an object's size or generation
    changed (a directory is copied with every file under it).

    Raises:
      FileNotFoundError: nothing is at `path`.
    """
    if not is_cloud(path):
        return os.path.expanduser(path)
    fs, p = _fs(path)
    if not fs.exists(p):
        raise FileNotFoundError(path)
    target = os.path.join(cache_dir(), hashlib.sha1(path.rstrip("/").encode()).hexdigest()[:16],
                          path.rstrip("/").rsplit("/", 1)[-1])
    if fs.isdir(p):
        names = walk_files(path)
        versions = {n: _version(fs, f"{p.rstrip('/')}/{n}") for n in names}
    else:
        names, versions = [None], {None: _version(fs, p)}
    stamp = target + ".source.json"
    recorded = json.dumps({str(k): v for k, v in versions.items()}, sort_keys=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with _cache_lock(target + ".lock"):  # processes sharing the cache (several per host, an NFS home) wait
        if os.path.exists(stamp) and open(stamp).read() == recorded:
            return target
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stamp)
        shutil.rmtree(target, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        for name in names:
            source = path if name is None else join(path, name)
            local = target if name is None else os.path.join(target, name)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            part = f"{local}.{os.getpid()}.part"
            fs.get_file(_fs(source)[1], part)
            os.replace(part, local)
        write_text(stamp, recorded)
    return target


@contextlib.contextmanager
def _cache_lock(path: str):
    """An exclusive `flock` on `path` for the body (none where the filesystem has no locks)."""
    import fcntl
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


# -- pre-flight ---------------------------------------------------------------------------------------
def _endpoint(path: str) -> tuple[str, int, str] | None:
    """(host, port, name) of the storage service `path` is reached at; None where it is not known here."""
    if not path.startswith("gs://"):
        return None  # s3: the endpoint comes from the AWS configuration, which s3fs reads
    from urllib.parse import urlparse
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    url = urlparse(emulator if emulator and "://" in emulator else f"http://{emulator}" if emulator
                   else "https://storage.googleapis.com")
    return url.hostname, url.port or (443 if url.scheme == "https" else 80), url.geturl()


def check_cloud_path(path: str, field: str, *, write: bool = False, timeout: float = 10.0) -> None:
    """Before a run reads or writes anything: the storage service of cloud `path` answers, its bucket
    exists, and (with `write`) an object can be written under `path` and removed again. Local paths pass.

    Raises:
      ConfigError: one line naming `field`, `path`, what failed and the fix (not the client's retries:
        an unreachable endpoint is found with one connection attempt of `timeout` seconds).
    """
    if not is_cloud(path):
        return
    import socket
    from miniend_jax.errors import ConfigError
    endpoint = _endpoint(path)
    if endpoint is not None:
        host, port, name = endpoint
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as error:
            raise ConfigError(f"{field}={path!r}: the storage service {name} cannot be reached ({error}); check the "
                              "network (and STORAGE_EMULATOR_HOST where an emulator is meant), then run again.") from None
    bucket = path.split("://", 1)[1].split("/", 1)[0]
    fs, _ = _fs(path)
    what = "read"
    try:
        if not fs.exists(bucket):
            at = f" at {endpoint[2]} (STORAGE_EMULATOR_HOST)" if endpoint and os.environ.get("STORAGE_EMULATOR_HOST") else ""
            raise ConfigError(f"{field}={path!r}: bucket {bucket!r} does not exist{at} (or this account cannot see "
                              f"it); create it (gcloud storage buckets create {_scheme(path)}{bucket}) or fix the path.")
        if write:
            what = "write"
            probe = join(path, f".write_probe.{socket.gethostname()}.{os.getpid()}")
            fs.pipe_file(_fs(probe)[1], b"")
            fs.rm_file(_fs(probe)[1])
    except ConfigError:
        raise
    except Exception as error:  # the clients raise their own types for 401/403 (OSError, HttpError, ...)
        raise ConfigError(f"{field}={path!r}: cannot {what} ({type(error).__name__}: {str(error).splitlines()[0][:160]}); "
                          "give this account access to the bucket (e.g. roles/storage.objectAdmin for a workdir, "
                          "objectViewer for inputs), or fix the path.") from None


def cloud_strings(tree, prefix: str = "") -> dict[str, str]:
    """Every cloud path among the string values of a nested mapping (a config as a dict), by dotted field
    name; comma-separated lists (`data.files`) are split."""
    found = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(cloud_strings(value, name + "."))
        elif isinstance(value, str):
            for i, part in enumerate(p.strip() for p in value.split(",")):
                if is_cloud(part):
                    found[name if i == 0 else f"{name}[{i}]"] = part
    return found
