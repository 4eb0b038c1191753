"""Runs whose workdir and inputs are on `gs://`, against a GCS emulator the tests start themselves
(`tests/gcs_emulator.py`): a distillation reading its teacher, vocabulary and corpus from the bucket and
writing its whole workdir there (the same files, and the same numbers, as the local run), kill -9 and
resume from the bucket bit for bit, a finetune keeping `best/` in the bucket, an export to the bucket;
storage that cannot be used stops the run in one line before anything is written; and the file layer
itself (`miniend_jax.files`) on both kinds of path."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT, SHARED_DATA, SPIECE, config_with
from tests.gcs_emulator import emulator, endpoint_env, listing

TINY = str(ROOT / "tests" / "configs" / "tiny.py")
TINY_FINETUNE = str(ROOT / "tests" / "configs" / "tiny_finetune.py")
CORPUS = sorted((SHARED_DATA / "enwiki_2015_extract" / "AA").glob("wiki_0*.gz"))[:4]
# 12 steps, a checkpoint every 4, the student exported at the end.
RUN = ("--config.train.steps=12", "--config.train.checkpoint_every=4", "--config.export.at_end=True",
       "--config.teacher.source=hf")


@pytest.fixture(scope="module")
def gcs():
    """The emulator's environment, also set in this process (fsspec's cached clients dropped on both ends,
    so that no other test's client answers for this endpoint)."""
    if sys.platform != "linux":  # on Linux a missing emulator is a broken install: the tests fail
        pytest.skip("the GCS emulator's package (setup.py's test extra) has wheels for Linux only")
    with emulator() as env, pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        import gcsfs  # after the settings: gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT on import
        gcsfs.GCSFileSystem.clear_instance_cache()
        yield env
        gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def inputs(gcs, tmp_path_factory):
    """The same inputs locally and in the bucket: a random tiny teacher as a HF directory, the T5
    vocabulary, four corpus files, SST-2."""
    from miniend_jax import build, files
    from miniend_jax.checkpoints.hf import save_hf_checkpoint
    local = tmp_path_factory.mktemp("inputs")
    config = config_with("tiny")
    teacher_config, params = build.load_model(config.teacher, build.model_config(config.teacher, "teacher"), 0)
    save_hf_checkpoint(str(local / "teacher"), teacher_config, params, spiece_model=str(SPIECE))
    shutil.copy(SPIECE, local / "spiece.model")
    (local / "corpus").mkdir()
    for path in CORPUS:
        shutil.copy(path, local / "corpus" / path.name)
    for name in ("train.tsv", "dev.tsv"):
        (local / "glue" / "SST-2").mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED_DATA / "glue" / "SST-2" / name, local / "glue" / "SST-2" / name)
    files.copy_tree(str(local), "gs://bucket/inputs")
    return {"local": str(local), "gs": "gs://bucket/inputs"}


def _input_overrides(root: str) -> list[str]:
    return [f"--config.teacher.path={root}/teacher", f"--config.data.vocab={root}/spiece.model",
            f"--config.data.files={root}/corpus/wiki_0*.gz"]


def _main(cwd, env, *args, config=TINY, timeout=600, check=True):
    result = subprocess.run([sys.executable, "-m", "miniend_jax.main", f"--config={config}", *args], cwd=cwd,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _losses(text: str) -> dict[int, float]:
    """The last loss logged at each step (a resumed run logs the steps after its checkpoint again)."""
    losses = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "loss" in row:
            losses[row["step"]] = row["loss"]
    return losses


def _shape(paths) -> list[str]:
    """A workdir listing with what differs by design taken out: tensorstore's content-addressed data files
    (named by hash, as many as its writes happened to need), the event file's time and host, and orbax's
    completion markers (written on object storage only)."""
    shaped = [re.sub(r"[0-9a-f]{32}", "<hash>", p) for p in paths if not p.endswith("commit_success.txt")]
    return sorted({re.sub(r"events\.out\.tfevents\..*", "events", p) for p in shaped})


def _local_listing(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def _no_local_gs_folder(*roots) -> None:
    for root in roots:
        assert not [p for p in os.listdir(root) if p.startswith("gs:")], root


@pytest.fixture(scope="module")
def runs(gcs, inputs, tmp_path_factory):
    """The same distillation with a local workdir and local inputs, and with both in the bucket."""
    cwd = tmp_path_factory.mktemp("cwd")
    local = str(tmp_path_factory.mktemp("local") / "run")
    _main(cwd, gcs, f"--workdir={local}", *RUN, *_input_overrides(inputs["local"]))
    cloud = _main(cwd, gcs, "--workdir=gs://bucket/distill", *RUN, *_input_overrides(inputs["gs"]),
                  "--config.jax_cache_dir=gs://bucket/jax_cache")
    return {"cwd": cwd, "local": local, "gs": "gs://bucket/distill", "stdout": cloud.stdout}


def test_a_distillation_in_the_bucket_is_the_local_one(gcs, runs):
    from miniend_jax import files
    local_losses = _losses(open(os.path.join(runs["local"], "metrics.jsonl")).read())
    cloud_losses = _losses(files.read_text("gs://bucket/distill/metrics.jsonl"))
    assert sorted(cloud_losses) == list(range(1, 13))
    assert cloud_losses == local_losses  # the same inputs read through the other layer: the same numbers
    bucket = listing(gcs, "bucket/distill")
    assert _shape(bucket) == _shape(_local_listing(runs["local"]))
    assert {"config.json", "metrics.jsonl", "hf_student/config.json", "hf_student/model.safetensors",
            "input_state/12/process_0/iterator.index", "checkpoints/12/commit_success.txt"} <= set(bucket)
    assert files.read_bytes("gs://bucket/distill/hf_student/model.safetensors") == \
        open(os.path.join(runs["local"], "hf_student", "model.safetensors"), "rb").read()
    _no_local_gs_folder(runs["cwd"], ROOT)
    assert [p for p in listing(gcs, "bucket/jax_cache") if p.startswith("jit_step-")]  # JAX's cache, in the bucket
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(files.local_copy("gs://bucket/distill/tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == list(range(1, 13))


def test_kill_9_and_resume_from_the_bucket_bit_for_bit(gcs, inputs, runs):
    from miniend_jax import files
    workdir = "gs://bucket/killed"
    command = [sys.executable, "-u", "-m", "miniend_jax.main", f"--config={TINY}", f"--workdir={workdir}", *RUN,
               *_input_overrides(inputs["gs"])]
    process = subprocess.Popen(command, cwd=runs["cwd"], env={**os.environ, **gcs}, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:  # killed once step 9 is logged: the checkpoint of step 8 is in flight or done
        if line.startswith("step 9/"):
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert "hf_student/config.json" not in listing(gcs, "bucket/killed")
    assert "lock" in listing(gcs, "bucket/killed")  # the killed run's lease, never released
    resumed = _main(runs["cwd"], gcs, f"--workdir={workdir}", *RUN, *_input_overrides(inputs["gs"]))
    assert "resum" in resumed.stdout.lower()
    assert f"taking over the lock of a run that is gone (pid {process.pid} on" in resumed.stdout
    assert _losses(files.read_text(f"{workdir}/metrics.jsonl")) == \
        _losses(files.read_text("gs://bucket/distill/metrics.jsonl"))
    assert files.read_bytes(f"{workdir}/hf_student/model.safetensors") == \
        files.read_bytes("gs://bucket/distill/hf_student/model.safetensors")
    _no_local_gs_folder(runs["cwd"], ROOT)


def test_export_to_the_bucket(gcs, runs):
    from miniend_jax import files
    _main(runs["cwd"], gcs, f"--workdir={runs['gs']}", "--config.mode=export",
          "--config.export.path=gs://bucket/exported", "--config.data.vocab=gs://bucket/inputs/spiece.model")
    assert sorted(files.walk_files("gs://bucket/exported")) == sorted(files.walk_files(f"{runs['gs']}/hf_student"))
    assert files.read_bytes("gs://bucket/exported/model.safetensors") == \
        files.read_bytes(f"{runs['gs']}/hf_student/model.safetensors")


def test_a_finetune_keeps_its_best_model_in_the_bucket(gcs, inputs, runs):
    from miniend_jax import files
    from miniend_jax.checkpoints.hf import load_hf_checkpoint
    _main(runs["cwd"], gcs, "--workdir=gs://bucket/finetune", "--config.model.source=hf",
          f"--config.model.path={runs['gs']}/hf_student", f"--config.data.vocab={inputs['gs']}/spiece.model",
          f"--config.tasks.glue_dir={inputs['gs']}/glue", "--config.train.steps=20", "--config.train.eval_every=10",
          config=TINY_FINETUNE)
    best = json.loads(files.read_text("gs://bucket/finetune/best.json"))
    results = json.loads(files.read_text("gs://bucket/finetune/results.json"))
    assert results["step"] == best["step"] and results["results"]["glue_sst2"]["accuracy"] == best["value"]
    bucket = set(listing(gcs, "bucket/finetune"))
    assert {"best/config.json", "best/model.safetensors", "best/spiece.model", "best/tokenizer.json",
            "inference_eval/glue_sst2-metrics.jsonl", "results.md"} <= bucket
    config, _ = load_hf_checkpoint("gs://bucket/finetune/best")  # what a user loads back
    assert config.d_model == 32
    _no_local_gs_folder(runs["cwd"], ROOT)


# -- storage that cannot be used: one line, before anything is written --------------------------------
class _Forbidden(http.server.BaseHTTPRequestHandler):
    """A storage endpoint that answers every request 403, as GCS does for an account without access."""

    def _refuse(self):
        body = json.dumps({"error": {"code": 403, "message": "caller does not have storage.objects.list access"}})
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_PUT = do_DELETE = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture
def forbidden():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("case", ["unreachable", "no bucket", "no permission"])
def test_unusable_storage_is_one_line_before_anything_is_written(case, gcs, forbidden, tmp_path):
    env, workdir, expected = dict(gcs), "gs://bucket/refused", ""
    if case == "unreachable":
        env = endpoint_env(_closed_port())
        expected = "cannot be reached"
    elif case == "no bucket":
        workdir, expected = "gs://no-such-bucket/run", "bucket 'no-such-bucket' does not exist"
    else:
        env = endpoint_env(forbidden)
        expected = "give this account access"
    started = time.time()
    result = _main(tmp_path, env, f"--workdir={workdir}", check=False, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: workdir={workdir!r}") and expected in lines[0], lines
    assert time.time() - started < 60  # not the client's retries
    assert os.listdir(tmp_path) == []
    if case == "no bucket":
        assert "refused" not in " ".join(listing(gcs, "bucket"))


def test_an_unreadable_input_is_named(gcs, tmp_path):
    result = _main(tmp_path, gcs, "--workdir=gs://bucket/never", "--config.data.vocab=gs://no-such-bucket/spiece.model",
                   check=False, timeout=120)
    assert result.returncode == 2
    line, = result.stderr.strip().splitlines()
    assert "data.vocab='gs://no-such-bucket/spiece.model'" in line and "does not exist" in line
    assert not [p for p in listing(gcs, "bucket") if p.startswith("never/")]


# -- the file layer ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["local", "gs"])
def test_the_file_layer_does_the_same_on_both_kinds(kind, gcs, tmp_path):
    from miniend_jax import files
    root = str(tmp_path / "layer") if kind == "local" else f"gs://bucket/layer-{time.time_ns()}"
    files.makedirs(root)
    files.write_text(files.join(root, "a.json"), '{"x": 1}')
    files.append_text(files.join(root, "log.jsonl"), "one\n")
    files.append_text(files.join(root, "log.jsonl"), "two\n")
    files.write_bytes(files.join(root, "sub", "b.bin"), b"\x00\x01\x02\x03")
    assert files.read_text(files.join(root, "a.json")) == '{"x": 1}'
    assert files.read_text(files.join(root, "log.jsonl")) == "one\ntwo\n"
    assert files.last_byte(files.join(root, "log.jsonl")) == b"\n"
    assert files.read_bytes(files.join(root, "sub", "b.bin"), 1, 2) == b"\x01\x02"
    assert files.getsize(files.join(root, "sub", "b.bin")) == 4
    assert files.listdir(root) == ["a.json", "log.jsonl", "sub"]
    assert files.walk_files(root) == ["a.json", "log.jsonl", "sub/b.bin"]
    assert files.glob(files.join(root, "*.json*")) == [files.join(root, "a.json"), files.join(root, "log.jsonl")]
    assert files.isdir(files.join(root, "sub")) and files.isfile(files.join(root, "a.json"))
    assert not files.exists(files.join(root, "missing"))
    copy = files.local_copy(root)
    assert sorted(files.walk_files(copy)) == files.walk_files(root) and os.path.isdir(copy)
    files.move_tree(files.join(root, "sub"), files.join(root, "sub.unreadable-1"))  # how a checkpoint is set aside
    assert files.walk_files(root) == ["a.json", "log.jsonl", "sub.unreadable-1/b.bin"]
    with pytest.raises(FileExistsError):
        files.create_exclusive(files.join(root, "a.json"), b"{}")
    files.remove(files.join(root, "a.json"))
    files.rmtree(files.join(root, "sub.unreadable-1"))
    assert files.listdir(root) == ["log.jsonl"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("gs:")]
    assert files.parent("gs://bucket/x") == "gs://bucket" and files.parent("gs://bucket") == "gs://bucket"
    assert not (files.exists("") or files.isfile("") or files.isdir(""))  # an unset path field is no file


def test_a_local_copy_is_fetched_again_only_when_the_object_changes(gcs, tmp_path, monkeypatch):
    from miniend_jax import files
    monkeypatch.setenv("MINIEND_CACHE_DIR", str(tmp_path))
    path = f"gs://bucket/cache-{time.time_ns()}/spiece.model"
    files.write_bytes(path, b"first")
    copy = files.local_copy(path)
    assert open(copy, "rb").read() == b"first" and copy.startswith(str(tmp_path))
    os.utime(copy, (0, 0))
    assert files.local_copy(path) == copy and os.stat(copy).st_mtime == 0  # unchanged: not fetched again
    files.write_bytes(path, b"second, longer")
    assert open(files.local_copy(path), "rb").read() == b"second, longer"


def test_a_second_run_on_a_bucket_workdir_is_refused(gcs, inputs, runs):
    workdir = "gs://bucket/busy"
    command = [sys.executable, "-u", "-m", "miniend_jax.main", f"--config={TINY}", f"--workdir={workdir}",
               "--config.train.steps=1000000", *RUN[1:], *_input_overrides(inputs["gs"])]
    first = subprocess.Popen(command, cwd=runs["cwd"], env={**os.environ, **gcs}, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    for line in first.stdout:
        if line.startswith("step 2/"):
            break
    second = subprocess.run(command, cwd=runs["cwd"], env={**os.environ, **gcs}, capture_output=True, text=True,
                            timeout=300)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert second.returncode == 2
    line, = second.stderr.strip().splitlines()
    assert f"is in use by pid {first.pid} on {socket.gethostname()}" in line and "gs://bucket/busy/lock" in line
    assert first.returncode == 0 and "lock" not in listing(gcs, "bucket/busy")  # released on a clean exit


@pytest.mark.parametrize("holder, taken", [
    ({"host": "another-host", "heartbeat": 0.0}, True),              # not seen for longer than STALE_SECONDS
    ({"host": "another-host", "heartbeat": None}, False),            # seen now
    ({"host": socket.gethostname(), "pid": 2 ** 22 + 7, "heartbeat": None}, True)])  # gone from this host
def test_a_lease_is_taken_over_only_from_a_run_that_is_gone(holder, taken, gcs):
    from miniend_jax import files
    from miniend_jax.errors import ConfigError
    from miniend_jax.workdir import _Lease
    path = f"gs://bucket/lease-{time.time_ns()}/lock"
    record = {"pid": 1, "started": 0.0, "command": "x", **holder}
    record["heartbeat"] = time.time() if record["heartbeat"] is None else record["heartbeat"]
    files.write_text(path, json.dumps(record))
    if taken:
        lease = _Lease(path).acquire()
        assert json.loads(files.read_text(path))["pid"] == os.getpid()
        lease.release()
        assert not files.exists(path)
    else:
        with pytest.raises(ConfigError, match="is in use by pid 1 on another-host"):
            _Lease(path).acquire()
        assert json.loads(files.read_text(path)) == record


def test_a_local_mirror_keeps_earlier_rows_and_pushes_only_changes(gcs):
    """seqio's loggers append to `<task>-metrics.jsonl`: a resumed run's mirror starts from the bucket's."""
    from miniend_jax import files
    target = f"gs://bucket/mirror-{time.time_ns()}"
    files.write_text(f"{target}/task-metrics.jsonl", '{"step": 10}\n')
    files.write_text(f"{target}/task-000010.jsonl", "old")
    mirror = files.LocalMirror(target)
    with open(os.path.join(mirror.path, "task-metrics.jsonl"), "a") as f:
        f.write('{"step": 20}\n')
    with open(os.path.join(mirror.path, "task-000020.jsonl"), "w") as f:
        f.write("new")
    files.write_text(f"{target}/task-000010.jsonl", "changed in the bucket only")  # not changed here: not pushed
    mirror.push()
    assert files.read_text(f"{target}/task-metrics.jsonl") == '{"step": 10}\n{"step": 20}\n'
    assert files.read_text(f"{target}/task-000020.jsonl") == "new"
    assert files.read_text(f"{target}/task-000010.jsonl") == "changed in the bucket only"


def test_processes_sharing_the_cache_copy_one_object_together(gcs, tmp_path):
    """Several processes of a host (or hosts sharing an NFS home) asking for the same local copy at once."""
    from miniend_jax import files
    path = f"gs://bucket/shared-{time.time_ns()}/weights.bin"
    data = os.urandom(4 << 20)
    files.write_bytes(path, data)
    code = "import sys; from miniend_jax import files; print(files.local_copy(sys.argv[1]))"
    env = {**os.environ, **gcs, "MINIEND_CACHE_DIR": str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, "-c", code, path], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, [err[-500:] for _, err in outputs]
    copies = {out.strip() for out, _ in outputs}
    assert len(copies) == 1 and open(copies.pop(), "rb").read() == data


def test_a_home_relative_local_path_is_expanded(gcs, runs, tmp_path):
    """`--workdir=~/run` as a shell passes it when quoted or after `=`: the home folder, not a folder `~`."""
    os.symlink(runs["local"], tmp_path / "run")
    env = {**gcs, "HOME": str(tmp_path)}
    _main(runs["cwd"], env, "--workdir=~/run", "--config.mode=export", "--config.export.path=~/exported",
          f"--config.data.vocab={SPIECE}")
    assert (tmp_path / "exported" / "model.safetensors").exists()
    assert not [p for p in os.listdir(runs["cwd"]) if p.startswith("~")]


def test_the_emulator_setting_alone_points_every_library_at_it(gcs):
    """`STORAGE_EMULATOR_HOST` is all a run needs: without it tensorstore (orbax's arrays) would go to the
    real service and wait there while gcsfs wrote the rest to the emulator."""
    env = {k: v for k, v in os.environ.items() if k not in ("TENSORSTORE_GCS_HTTP_URL", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")}
    env["STORAGE_EMULATOR_HOST"] = gcs["STORAGE_EMULATOR_HOST"]
    result = subprocess.run([sys.executable, "-m", "miniend_jax.main", f"--config={TINY}", "--workdir=gs://bucket/one",
                             "--config.train.steps=2", "--config.train.checkpoint_every=2"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpoints/2/params/commit_success.txt" in listing(gcs, "bucket/one")
