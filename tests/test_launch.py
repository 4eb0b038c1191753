"""`python -m miniend_jax.launch`: the commands it runs on a TPU pod (against a stand-in `gcloud` that records
its arguments and plays the workers), the SLURM script it submits (a stand-in `sbatch`), the paths it
refuses before any call, and every config's documented command, which the launcher must accept."""

import glob
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from miniend_jax import launch
from tests.conftest import ROOT

# ml_collections loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

TINY = ["--config=tests/configs/tiny.py", "--workdir=gs://bucket/tiny",
        "--config.data.files=gs://bucket/wiki/*.gz", "--config.data.vocab=gs://bucket/spiece.model"]
TPU = ["tpu", "--tpu=pod", "--zone=us-central2-b", "--project=proj", "--allow_dirty"]
DISTRIBUTED = "--config.distributed.enabled=True"

GCLOUD = """#!{python}
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["STUB_RECORD"], "a") as f:
    f.write(json.dumps(["gcloud", *args]) + "\\n")
option = lambda name: next((a.split("=", 1)[1] for a in args if a.startswith(name + "=")), "")
if "describe" in args:
    print(json.dumps({{"networkEndpoints": [{{"ipAddress": "10.0.0.%d" % i}} for i in range(3)]}}))
if "scp" in args:
    shutil.copyfile(args[args.index("scp") + 1], os.environ["STUB_RECORD"] + ".tar.gz")
if "miniend_jax.main" in option("--command"):
    worker = option("--worker")
    print("worker %s line 1" % worker, flush=True)
    print("worker %s line 2" % worker, flush=True)
    sys.exit(json.loads(os.environ.get("STUB_EXITS", "{{}}")).get(worker, 0))
"""

SBATCH = """#!{python}
import json, os, sys
with open(os.environ["STUB_RECORD"], "a") as f:
    f.write(json.dumps(["sbatch", *sys.argv[1:]]) + "\\n")
print("Submitted batch job 4242")
"""


@pytest.fixture
def stubs(tmp_path):
    """Stand-in `gcloud` and `sbatch` first on PATH; `stubs.calls()` reads what they were called with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("gcloud", GCLOUD), ("sbatch", SBATCH)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "calls.jsonl"

    class Stubs:
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_RECORD": str(record),
               "PYTHONPATH": str(ROOT)}
        tarball = pathlib.Path(str(record) + ".tar.gz")

        @staticmethod
        def calls():
            return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    return Stubs()


def _launch(stubs, *argv, cwd=ROOT, **env):
    return subprocess.run([sys.executable, "-m", "miniend_jax.launch", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**stubs.env, **env})


def _one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _worker(call):
    return next(a for a in call if a.startswith("--worker="))


def _main_args(call):
    """The run's arguments in a worker's ssh call, after `-m miniend_jax.main`."""
    command = shlex.split(next(a for a in call if a.startswith("--command=")).split("=", 1)[1])
    return command[command.index("miniend_jax.main") + 1:]


def test_launcher_imports_no_jax():
    code = ("import sys; from miniend_jax import launch; "
            f"launch.prepare({['tpu', '--tpu=pod', '--zone=z', '--', *TINY]!r}); "
            "heavy = {'jax', 'tensorflow', 'seqio'} & set(sys.modules); assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr


def test_tpu_run_installs_then_runs_every_worker(stubs, tmp_path):
    logs = tmp_path / "logs"
    result = _launch(stubs, *TPU, f"--log_dir={logs}", "--", *TINY, STUB_EXITS='{"2": 3}')
    assert result.returncode == 3, result.stderr
    calls = stubs.calls()
    location = ["--zone=us-central2-b", "--project=proj"]
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert calls[0] == [*tpu_vm, "describe", "pod", *location, "--format=json"]
    tarball = calls[1][5]
    assert calls[1] == [*tpu_vm, "scp", tarball, "pod:miniend_jax.tar.gz", "--worker=all", *location]
    assert tarball.endswith(".tar.gz") and not os.path.exists(tarball)  # removed once copied
    assert calls[2][:9] == [*tpu_vm, "ssh", "pod", *location, "--worker=all"]
    install = calls[2][9]
    assert install.startswith("--command=") and "tar -xzf ~/miniend_jax.tar.gz" in install
    assert "python3.11 -m venv $HOME/miniend_venv" in install and '-e "$HOME/miniend_jax[tpu]"' in install
    workers = sorted(calls[3:], key=_worker)
    assert [_worker(c) for c in workers] == ["--worker=0", "--worker=1", "--worker=2"]
    for call in workers:
        assert call[:8] == [*tpu_vm, "ssh", "pod", *location] and len(call) == 10
        assert call[9].startswith("--command=cd ~/miniend_jax && $HOME/miniend_venv/bin/python")
        assert _main_args(call) == [*TINY, DISTRIBUTED]
    # The packed checkout: the project files at the top.
    names = subprocess.run(["tar", "-tzf", str(stubs.tarball)], capture_output=True, text=True).stdout.split()
    assert {"setup.py", "miniend_jax/main.py", "configs/base.py"} <= set(names)
    # Worker 0 on the console, the others in their logs; one exit line each.
    assert "worker 0 line 1\nworker 0 line 2\n" in result.stdout and "worker 1 line" not in result.stdout
    for i in (1, 2):
        assert (logs / f"worker_{i}.log").read_text() == f"worker {i} line 1\nworker {i} line 2\n"
    assert "worker 0: exit 0\nworker 1: exit 0\n" in result.stdout
    assert f"worker 2: exit 3 (log: {logs}/worker_2.log)" in result.stdout


def test_dry_run_prints_the_commands_a_run_makes_and_makes_none(stubs, tmp_path):
    logs = tmp_path / "logs"
    options = [*TPU, "--num_workers=3", f"--log_dir={logs}"]
    dry = _launch(stubs, *options, "--dry_run", "--", *TINY)
    assert dry.returncode == 0, dry.stderr
    assert stubs.calls() == [] and not logs.exists()  # nothing run, nothing written
    printed = [shlex.split(line) for line in dry.stdout.splitlines() if line.startswith("gcloud ")]
    assert any(line.startswith("git ") for line in dry.stdout.splitlines())
    run = _launch(stubs, *options, "--", *TINY)
    assert run.returncode == 0, run.stderr
    recorded = stubs.calls()
    assert printed[:2] == recorded[:2] and sorted(printed[2:], key=_worker) == sorted(recorded[2:], key=_worker)
    assert len(printed) == 5
    # Without --num_workers, the describe comes first.
    dry = _launch(stubs, *TPU, "--dry_run", "--", *TINY)
    assert dry.returncode == 0 and dry.stdout.splitlines()[0].startswith("gcloud compute tpus tpu-vm describe pod")


def _paths(monkeypatch, *main_args):
    monkeypatch.chdir(ROOT)
    config, workdir, _ = launch.load_config(["--workdir=gs://b/run", *main_args])
    return launch.run_paths(config, workdir)


def test_run_paths_follow_the_mode_and_sources(monkeypatch):
    vocab = "../shared/data/t5_spiece/spiece.model"
    distill = _paths(monkeypatch, "--config=configs/t5_base_miniend_e.py", "--config.jax_cache_dir=gs://b/cache")
    assert distill == {"workdir": "gs://b/run", "jax_cache_dir": "gs://b/cache", "teacher.path": "/path/to/t5-base",
                       "data.vocab": vocab,  # hf_student in the workdir
                       "data.tfds_data_dir": "~/tensorflow_datasets"}  # C4 from TFDS's default: each machine's own
    pretrain = _paths(monkeypatch, "--config=configs/baselines/scratch.py", "--config.data.tfds_data_dir=gs://b/t",
                      "--config.export.path=gs://b/hf")
    assert pretrain == {"workdir": "gs://b/run", "data.vocab": vocab, "data.tfds_data_dir": "gs://b/t",
                        "export.path": "gs://b/hf"}  # no teacher
    files = _paths(monkeypatch, "--config=tests/configs/tiny.py", "--config.data.files=gs://b/a/*.gz, gs://b/b/*.gz")
    assert files["data.files[0]"] == "gs://b/a/*.gz" and files["data.files[1]"] == "gs://b/b/*.gz"
    glue = _paths(monkeypatch, "--config=configs/finetune/glue.py:rte", "--config.tasks.classification_dirs=gs://b/c")
    assert glue == {"workdir": "gs://b/run", "model.path": "workdirs/small_miniend_e", "data.vocab": vocab,
                    "tasks.glue_dir": "../shared/data/glue", "tasks.classification_dirs": "gs://b/c"}
    summ = _paths(monkeypatch, "--config=configs/finetune/summarization.py:samsum", "--config.mode=evaluate")
    assert summ["tasks.summarization_dir"] == "../shared/data" and "tasks.glue_dir" not in summ
    infer = _paths(monkeypatch, "--config=configs/finetune/glue.py:rte", "--config.mode=infer",
                   "--config.infer.input=gs://b/in.jsonl", "--config.infer.output=gs://b/out.jsonl")
    assert infer["infer.input"] == "gs://b/in.jsonl" and infer["infer.output"] == "gs://b/out.jsonl"
    assert "tasks.glue_dir" not in infer  # a file of inputs registers no Task
    hf = _paths(monkeypatch, "--config=configs/finetune/hf_dataset.py")
    assert hf["tasks.hf.sst2.path"] == "sst2/{split}.parquet"
    assert _paths(monkeypatch, "--config=configs/t5_3b_interp.py", "--config.mode=plan") == {"workdir": "gs://b/run"}
    export = _paths(monkeypatch, "--config=configs/small_cpu.py", "--config.mode=export")
    assert export == {"workdir": "gs://b/run", "data.vocab": vocab}


@pytest.mark.parametrize("override, field", [
    ("--workdir=/tmp/tiny", "workdir"),
    ("--config.teacher.source=hf --config.teacher.path=/data/t5-base", "teacher.path"),
    ("--config.data.vocab=../shared/data/t5_spiece/spiece.model", "data.vocab"),
])
def test_tpu_refuses_a_local_path(stubs, override, field):
    result = _launch(stubs, *TPU, "--", *TINY, *override.split())
    path = override.split()[-1].split("=", 1)[1]
    line = _one_line_error(result, f"{field}={path!r}", "local path", "gs://")
    assert ("--workdir=gs://" if field == "workdir" else f"--config.{field}=gs://") in line
    assert stubs.calls() == []


@pytest.mark.parametrize("argv, words", [
    (["--", "--workdir=gs://b/x"], ["--config is required"]),
    (["--", "--config=tests/configs/tiny.py"], ["--workdir is required"]),
    (["--", *TINY, "--config.train.nope=1"], ["nope"]),
    (["--", *TINY, "--config.train.steps=abc"], ["train.steps"]),
    (["--", "--config=configs/missing.py", "--workdir=gs://b/x"], ["configs/missing.py"]),
    ([*TINY], ["after `--`"]),
    (["--num_workers=0", "--", *TINY], ["--num_workers", "not a positive integer"]),
])
def test_bad_run_arguments_are_one_line(stubs, argv, words):
    result = _launch(stubs, *TPU, *argv)
    _one_line_error(result, *words)
    assert stubs.calls() == []


def test_uncommitted_changes_are_refused_unless_allowed(stubs, tmp_path):
    """In a small git copy of the files the launcher needs."""
    repo = tmp_path / "repo"
    for name in ("miniend_jax/__init__.py", "miniend_jax/launch.py", "configs/__init__.py", "configs/base.py",
                 "tests/configs/tiny.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, repo / name)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for step in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "files"]):
        subprocess.run([*git, *step], check=True, capture_output=True)
    with open(repo / "configs/base.py", "a") as f:
        f.write("# changed\n")
    argv = ["tpu", "--tpu=pod", "--zone=z", "--num_workers=2", "--dry_run", "--", *TINY]
    env = {"PYTHONPATH": str(repo)}
    _one_line_error(_launch(stubs, *argv, cwd=repo, **env), "uncommitted changes to configs/base.py", "--allow_dirty")
    allowed = _launch(stubs, "tpu", "--allow_dirty", *argv[1:], cwd=repo, **env)
    assert allowed.returncode == 0, allowed.stderr
    assert "ls-files" in allowed.stdout  # the working tree's files are packed, not HEAD
    shutil.copyfile(repo / "tests/configs/tiny.py", repo / "tests/configs/new.py")
    new = [a.replace("tiny.py", "new.py") for a in argv]
    _one_line_error(_launch(stubs, "tpu", "--allow_dirty", *new[1:], cwd=repo, **env), "new.py is not tracked")
    assert stubs.calls() == []


SLURM_TINY = ["--config=tests/configs/tiny.py", "--workdir=/shared/runs/tiny",
              "--config.data.files=/shared/wiki/*.gz", "--config.data.vocab=gs://bucket/spiece.model"]


def test_slurm_writes_and_submits_the_script(stubs, tmp_path):
    script = tmp_path / "job.sbatch"
    argv = ["slurm", "--nodes=2", "--gpus_per_node=4", "--partition=gpu", "--time=01:00:00", "--account=acc",
            "--job_name=tiny", "--venv=/opt/venv", f"--script={script}"]
    dry = _launch(stubs, *argv, "--dry_run", "--", *SLURM_TINY)
    assert dry.returncode == 0, dry.stderr
    assert stubs.calls() == [] and not script.exists()
    result = _launch(stubs, *argv, "--", *SLURM_TINY)
    assert result.returncode == 0, result.stderr
    assert stubs.calls() == [["sbatch", str(script)]]
    assert "Submitted batch job 4242" in result.stdout
    text = script.read_text()
    assert dry.stdout == text + shlex.join(["sbatch", str(script)]) + "\n"
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert [line for line in lines if line.startswith("#SBATCH")] == [
        "#SBATCH --job-name=tiny", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu", "#SBATCH --time=01:00:00", "#SBATCH --account=acc",
        f"#SBATCH --output={tmp_path}/tiny-%j.log"]
    assert f"cd {ROOT}" in lines
    srun = shlex.split(lines[-1])
    assert srun[:5] == ["srun", "/opt/venv/bin/python", "-u", "-m", "miniend_jax.main"]
    assert srun[5:] == [*SLURM_TINY, DISTRIBUTED]
    # Defaults: the job named after the workdir, 8 GPUs a node, the launcher's own Python.
    dry = _launch(stubs, "slurm", "--nodes=2", "--dry_run", "--", *SLURM_TINY)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert "#SBATCH --job-name=tiny" in lines and "#SBATCH --gpus-per-node=8" in lines
    assert shlex.split(lines[-2])[1] == sys.executable and lines[-1] == "sbatch launch_logs/tiny.sbatch"
    assert not (ROOT / "launch_logs" / "tiny.sbatch").exists() and stubs.calls() == [["sbatch", str(script)]]


def test_slurm_refuses_a_relative_path(stubs):
    result = _launch(stubs, "slurm", "--nodes=2", "--", *SLURM_TINY, "--config.data.vocab=data/spiece.model")
    _one_line_error(result, "data.vocab='data/spiece.model'", "relative path", "absolute")
    assert stubs.calls() == []


# --- every config's documented command ---------------------------------------------------------------------

CONFIGS = sorted(p for p in glob.glob(str(ROOT / "configs" / "**" / "*.py"), recursive=True)
                 if "def get_config" in pathlib.Path(p).read_text())


def _commands(doc) -> list[list[str]]:
    """The `python -m miniend_jax.main|launch` commands of `doc`, continuation lines joined."""
    commands, current = [], None
    for line in doc.splitlines():
        line = line.strip()
        if current is None:
            match = re.match(r"(Commands?: )?(python -m miniend_jax\.(main|launch)\b.*)", line)
            if not match:
                continue
            current, line = "", match.group(2)
        current += line
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        commands.append(shlex.split(current))
        current = None
    return commands


def _documented_commands(path) -> list[list[str]]:
    import ast
    return _commands(ast.get_docstring(ast.parse(pathlib.Path(path).read_text())) or "")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_documented_command_is_accepted_by_the_launcher(path, monkeypatch):
    """One of the commands runs this very file; the launcher's parsing accepts each; a TPU config is launched
    on the pod with every path a cloud path (`launch tpu` refuses any other)."""
    monkeypatch.chdir(ROOT)
    relative = os.path.relpath(path, ROOT)
    doc = pathlib.Path(path).read_text()
    commands = _documented_commands(path)
    assert commands, f"{relative}: its docstring shows no `python -m miniend_jax.main` or `launch` command"
    pod = "TPU" in doc.split('"""')[1]
    config_files = []
    for command in commands:
        assert command[:2] == ["python", "-m"] and command[2] in ("miniend_jax.main", "miniend_jax.launch")
        if command[2] == "miniend_jax.main":
            assert not pod, f"{relative} is a TPU config: its command should be `python -m miniend_jax.launch tpu`"
            _, _, config_file = launch.load_config(command[3:])
        else:
            assert command[3] in ("tpu", "slurm")
            args, _, workdir, paths = launch.prepare(command[3:])
            config_file = args.config_file
            assert all(launch.is_cloud(p) for p in paths.values()) or args.cluster == "slurm", paths
        config_files.append(config_file)
    assert relative in config_files


def test_readme_pod_commands_are_accepted_by_the_launcher(monkeypatch):
    monkeypatch.chdir(ROOT)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Scaling to a pod"):readme.index("### A memory plan before launch")]
    commands = [c for c in _commands(section) if c[2] == "miniend_jax.launch"]
    assert {c[3] for c in commands} == {"tpu", "slurm"}
    for command in commands:
        launch.prepare(command[3:])


@pytest.mark.parametrize("form", [["tpu", "--tpu=NAME", "--zone=Z", "--num_workers=2", "--log_dir=gs://b/logs"],
                                  ["slurm", "--nodes=2", "--script=gs://b/run.sbatch"]])
def test_the_launchers_own_files_are_local(form, capsys):
    status = launch.main([*form, "--dry_run", "--", "--config=tests/configs/tiny.py", "--workdir=gs://b/run"])
    err = capsys.readouterr().err
    assert status == 2 and "the launcher writes its logs and scripts on this machine" in err, err


def test_a_pod_run_without_a_tfds_folder_is_refused(capsys):
    """C4 with no `data.tfds_data_dir` reads each worker's own ~/tensorflow_datasets: named with the other
    local paths, all in one line."""
    status = launch.main(["tpu", "--tpu=NAME", "--zone=Z", "--num_workers=2", "--dry_run", "--",
                          "--config=configs/t5_3b_interp.py", "--workdir=gs://B/3b", "--config.teacher.path=gs://B/t",
                          "--config.data.vocab=/data/spiece.model"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and err.startswith("error: 2 local path(s)"), err
    assert "data.vocab='/data/spiece.model'" in err and "data.tfds_data_dir='~/tensorflow_datasets'" in err
    assert "gcloud storage cp -r ~/tensorflow_datasets gs://BUCKET/" in err
