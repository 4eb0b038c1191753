"""One command that runs a config on every worker of a cluster: a Cloud TPU pod slice or a SLURM job.

  python -m miniend_jax.launch tpu --tpu=NAME --zone=ZONE [--project=P] [--num_workers=N]
      [--venv=~/miniend_venv] [--log_dir=DIR] [--allow_dirty] [--dry_run] -- MAIN_ARGS
  python -m miniend_jax.launch slurm --nodes=N [--gpus_per_node=8] [--partition=P] [--time=HH:MM:SS]
      [--account=A] [--job_name=NAME] [--venv=PATH] [--script=PATH] [--dry_run] -- MAIN_ARGS

MAIN_ARGS are those of `python -m miniend_jax.main` (`--config=configs/X.py --workdir=DIR
[--config.a.b=v ...]`, the config file named relative to this checkout's root, where the launcher runs);
every worker runs them with `--config.distributed.enabled=True` appended, and `jax.distributed.initialize`
finds the cluster itself. A preempted run resumes with the same command.

First the config is loaded as main.py loads it, and every path the run reads or writes (`run_paths`) is
checked: on a TPU pod each must be a cloud path (gs://, s3://), since every worker is its own machine; under
SLURM a cloud path or an absolute one (the cluster's shared filesystem). Bad input (a missing `--config`
or `--workdir`, a config that does not load, a path the cluster cannot use, uncommitted changes) is one
line on stderr and exit status 2, before any gcloud or sbatch call.

tpu: packs this checkout (`git archive HEAD`; with `--allow_dirty`, the working-tree files `git ls-files`
lists), copies it to every worker, unpacks it into a fresh `~/miniend_jax` and installs it into the venv
(`pip install -e '.[tpu]'`), then starts the run on each worker with its own
`gcloud compute tpus tpu-vm ssh --worker=i`, all in parallel. Worker 0's output streams to the console
(and to `<log_dir>/worker_0.log`), each other worker's goes to `<log_dir>/worker_<i>.log`; when all have
ended, one line per worker `worker i: exit N`, and the launcher exits 0 if all exited 0, else with the
first nonzero status. Ctrl-C ends the local ssh processes only: the processes on the workers are then
left to gcloud/ssh's hangup, and one without a terminal may go on running (stop them with the same
`gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`, e.g. `pkill -f miniend_jax.main`).

slurm: writes an sbatch script that `srun`s the run once per node from this checkout (which must be on
the cluster's shared filesystem) with the venv's Python (default: the one running the launcher), submits
it with `sbatch` and prints sbatch's job-id line.

`--dry_run` prints every command (and the sbatch script) and runs nothing, writing nothing.

Imports only the standard library, absl, ml_collections and `miniend_jax.files`'s path rules: the launcher runs
on a laptop without JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

from absl import flags
from ml_collections import config_flags

from miniend_jax.config_file import LOAD_ERRORS, load_error
from miniend_jax.files import is_cloud

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the checkout that is installed on the workers
DISTRIBUTED = "--config.distributed.enabled=True"
TARBALL = "miniend_jax.tar.gz"  # the packed checkout, in each worker's home
REMOTE_CHECKOUT = "~/miniend_jax"
DOWNSTREAM_MODES = ("finetune", "evaluate", "infer")
_OUTPUT_FIELDS = ("workdir", "export.path", "infer.output", "jax_cache_dir")  # written, not copied there
TFDS_DEFAULT_DIR = "~/tensorflow_datasets"  # where TFDS reads when no data dir is given: each machine's own
LIST_FIELDS = ("data.files", "data.hf_path", "tasks.classification_dirs")  # and tasks.hf.<name>.path

__all__ = ["LaunchError", "is_cloud", "load_config", "main", "prepare", "run_paths"]


class LaunchError(Exception):
    """Bad input to the launcher: printed as one line, exit status 2."""


# --- the run: its config and its paths -------------------------------------------------------------------

def load_config(main_args: list[str]):
    """Loads the config of `python -m miniend_jax.main MAIN_ARGS` as main.py does: the ml_collections config
    file of `--config` with its `--config.<field>=value` overrides, and `--workdir`.

    Returns:
      (config, workdir, the config file's path relative to this checkout's root).

    Raises:
      LaunchError: no `--config` or `--workdir`; a config file that cannot be loaded, or that is not named
        relative to this checkout's root (where the workers run the command); an override that names no
        field or has the wrong type; an unknown flag or an argument that is not a flag.
    """
    argv = ["miniend_jax.main", *main_args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.",
                        flag_values=values)
    try:
        rest = values(argv)
        config = values.config  # a file that failed to load raises on first use
        getattr(config, "mode", None)
    except LOAD_ERRORS as e:
        raise LaunchError(load_error(e, argv)) from None
    if config is None:
        raise LaunchError("--config is required after `--`: the run's config file, e.g. "
                          "--config=configs/t5_3b_interp.py")
    if not values.workdir:
        raise LaunchError("--workdir is required after `--`: the run's directory for checkpoints, metrics and config")
    if len(rest) > 1:
        raise LaunchError(f"unexpected argument {rest[1]!r} after `--`: give the run's flags only "
                          "(--config=..., --workdir=..., --config.<field>=...)")
    filename = config_flags.get_config_filename(values["config"]).split(":", 1)[0]  # less `:<argument>`
    if os.path.isabs(filename) or pathlib.Path(filename).resolve() != (ROOT / filename).resolve():
        raise LaunchError(f"--config={filename}: run the launcher from the root of the checkout it installs ({ROOT}) "
                          "and name the config file relative to it (e.g. --config=configs/t5_3b_interp.py): every "
                          "worker runs the command in its copy of that checkout")
    return config, values.workdir, os.path.normpath(filename)


def _task_names(config) -> list[str]:
    t, mode = config.tasks, config.mode
    names = t.eval.split(",") + (t.train.split(",") if mode == "finetune" else [])
    if mode == "infer":
        names = [config.infer.input]
    return [n.strip() for n in names if n.strip()]


def _is_file_input(value: str) -> bool:
    """`infer.input` names a file, not a Task (miniend_jax.inputs.is_file_input, without looking here)."""
    return "/" in value or value.endswith((".jsonl", ".txt", ".tsv"))


def run_paths(config, workdir: str) -> dict[str, str]:
    """Every path the run of `config` in `workdir` reads or writes, for its mode and sources: {field: path},
    the non-empty ones only. The workdir is under the key `workdir`. A comma-separated field (`data.files`,
    `data.hf_path`, `tasks.classification_dirs`, `tasks.hf.<name>.path`) gives one entry per item, keyed
    `<field>[i]` when there are several. A `mode=plan` run uses its workdir only (a plan reads no weights,
    data or vocabulary that is not on its machine).

    Raises:
      Nothing: a field an older config lacks counts as empty.
    """
    mode, d, t = config.mode, config.data, config.tasks
    paths = {"workdir": workdir, "jax_cache_dir": config.get("jax_cache_dir", "")}

    def model_path(section, role):
        if section.source in ("hf", "miniend"):
            paths[f"{role}.path"] = section.path

    if mode in ("distill", "pretrain"):
        if mode == "distill":
            model_path(config.teacher, "teacher")
        paths["data.vocab"] = d.vocab
        field = {"files": "files", "hf": "hf_path", "c4": "tfds_data_dir"}.get(d.source)
        if field:
            paths[f"data.{field}"] = d[field] or (TFDS_DEFAULT_DIR if d.source == "c4" else "")
        if config.export.at_end:
            paths["export.path"] = config.export.path
    elif mode in DOWNSTREAM_MODES:
        model_path(config.model, "model")
        paths["data.vocab"] = d.vocab
        if mode == "infer":
            paths["infer.output"] = config.infer.output
        if mode == "infer" and _is_file_input(config.infer.input):
            paths["infer.input"] = config.infer.input
        else:  # the Tasks are registered: every local Task file is read
            names = _task_names(config)
            if t.glue_source == "local" and any(n == "glue" or n.startswith("glue_") for n in names):
                paths["tasks.glue_dir"] = t.glue_dir
            if t.summarization_source == "local" and any(n.startswith("summ_") for n in names):
                paths["tasks.summarization_dir"] = t.summarization_dir
            from_tfds = "tfds" in (t.glue_source, t.summarization_source)
            paths["tasks.tfds_data_dir"] = t.tfds_data_dir or (TFDS_DEFAULT_DIR if from_tfds else "")
            paths["tasks.classification_dirs"] = t.classification_dirs
            for name in t.get("hf") or {}:
                paths[f"tasks.hf.{name}.path"] = t.hf[name].get("path", "")
    elif mode == "export":
        paths["data.vocab"] = d.vocab
        paths["export.path"] = config.export.path
    found = {}
    for field, value in paths.items():
        listed = field in LIST_FIELDS or field.startswith("tasks.hf.")
        items = [p.strip() for p in value.split(",") if p.strip()] if listed else [value] if value else []
        for i, item in enumerate(items):
            found[field if len(items) == 1 else f"{field}[{i}]"] = item
    return found


def _flag(field: str) -> str:
    return "--workdir" if field == "workdir" else "--config." + re.sub(r"\[\d+\]$", "", field)


def check_paths(paths: dict[str, str], cluster: str) -> None:
    """Every path of `paths` (from `run_paths`) is one that each worker of `cluster` reaches the same way.

    Raises:
      LaunchError: tpu: a path that is not a cloud path; slurm: a relative path. Naming the field, the path,
        the reason and the fix.
    """
    if cluster == "tpu":
        local = {field: path for field, path in paths.items() if not is_cloud(path)}
        if local:
            def fix(field, path):
                if field in _OUTPUT_FIELDS:  # written by the run: nothing to copy
                    return f"{_flag(field)}=gs://BUCKET/..."
                shown = "~/" + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)
                return f"copy it (gcloud storage cp -r {shown} gs://BUCKET/...) and pass {_flag(field)}=gs://BUCKET/..."
            named = "; ".join(f"{field}={path!r}: {fix(field, path)}" for field, path in local.items())
            raise LaunchError(
                f"{len(local)} local path(s), which a TPU pod cannot use (every worker is its own machine, where it "
                f"would be a different folder, and a preempted slice loses what was written there): {named}")
    if cluster == "slurm":
        for field, path in paths.items():
            if not (is_cloud(path) or os.path.isabs(path)):
                raise LaunchError(
                    f"{field}={path!r} is a relative path: each node of a SLURM job may start in another working "
                    f"directory; pass {_flag(field)}=/an/absolute/path on the cluster's shared filesystem, or a "
                    "gs:// path")


# --- the launcher's own arguments ------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise LaunchError(f"{message} (`{self.prog} --help` lists the flags)")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m miniend_jax.launch", allow_abbrev=False,
                     description="Runs `python -m miniend_jax.main MAIN_ARGS` on every worker of a cluster.",
                     epilog="MAIN_ARGS follow `--`: --config=configs/X.py --workdir=DIR [--config.a.b=v ...]")
    clusters = parser.add_subparsers(dest="cluster", required=True, metavar="{tpu,slurm}")
    tpu = clusters.add_parser("tpu", allow_abbrev=False, help="a Cloud TPU VM (pod slice), over gcloud")
    tpu.add_argument("--tpu", required=True, help="the TPU VM's name")
    tpu.add_argument("--zone", required=True)
    tpu.add_argument("--project", default="", help="default: gcloud's configured project")
    tpu.add_argument("--num_workers", type=_positive_int, default=0, help="default: from `gcloud ... describe`")
    tpu.add_argument("--venv", default="~/miniend_venv", help="the venv on each worker (made with python3.11)")
    tpu.add_argument("--log_dir", default="", help="default: launch_logs/<tpu>-<time>")
    tpu.add_argument("--allow_dirty", action="store_true",
                     help="pack the working-tree files, uncommitted changes included, instead of HEAD")
    slurm = clusters.add_parser("slurm", allow_abbrev=False, help="a SLURM job, one task per node")
    slurm.add_argument("--nodes", type=_positive_int, required=True)
    slurm.add_argument("--gpus_per_node", type=int, default=8, help="0: none requested")
    slurm.add_argument("--partition", default="")
    slurm.add_argument("--time", default="", help="HH:MM:SS")
    slurm.add_argument("--account", default="")
    slurm.add_argument("--job_name", default="", help="default: the workdir's name")
    slurm.add_argument("--venv", default="", help="the venv on the nodes; default: the Python running this")
    slurm.add_argument("--script", default="", help="default: launch_logs/<job_name>.sbatch")
    for sub in (tpu, slurm):
        sub.add_argument("--dry_run", action="store_true", help="print the commands, run none")
    return parser


def prepare(argv: list[str]):
    """Parses the launcher's command line (without the program name), loads the run's config and checks its
    paths for the cluster; runs no git, gcloud or sbatch.

    Returns:
      (the launcher's arguments, with `main_args` the run's own and `config_file` its config file; the
      config; the workdir; `run_paths`).

    Raises:
      LaunchError: any bad input (see `load_config`, `check_paths`), a wrong or missing launcher flag, or
        no `--` before the run's arguments.
    """
    if "--" not in argv:
        _parser().parse_known_args(argv)  # --help, and a wrong launcher flag, first
        raise LaunchError("put the run's own arguments after `--`, e.g. python -m miniend_jax.launch tpu --tpu=NAME "
                          "--zone=ZONE -- --config=configs/t5_3b_interp.py --workdir=gs://BUCKET/3b_interp")
    cut = argv.index("--")
    args = _parser().parse_args(argv[:cut])
    for flag in ("log_dir", "script"):  # the launcher's own files: on this machine
        value = getattr(args, flag, "")
        if value and is_cloud(value):
            raise LaunchError(f"--{flag}={value}: the launcher writes its logs and scripts on this machine; give a "
                              "local path (the run's own files go to its --workdir)")
        if value:
            setattr(args, flag, os.path.expanduser(value))
    args.main_args = argv[cut + 1:]
    config, workdir, args.config_file = load_config(args.main_args)
    paths = run_paths(config, workdir)
    check_paths(paths, args.cluster)
    return args, config, workdir, paths


# --- tpu -------------------------------------------------------------------------------------------------

def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise LaunchError("git is not installed: the launcher packs this checkout with git") from None
    if result.returncode:
        raise LaunchError(f"git {' '.join(args)} failed in {ROOT} (the launcher packs this checkout with git): "
                          f"{result.stderr.strip()}")
    return result.stdout


def _remote(path: str) -> str:
    """`path` for the worker's shell: a leading `~` becomes `$HOME` (a quoted `~` would not expand)."""
    if path == "~" or path.startswith("~/"):
        return "$HOME" + (f"/{shlex.quote(path[2:])}" if path[2:] else "")
    return shlex.quote(path)


def install_command(venv: str) -> str:
    """The shell command each worker runs to unpack the checkout and install it into `venv`."""
    v = _remote(venv)
    return (f"set -e; rm -rf {REMOTE_CHECKOUT}; mkdir -p {REMOTE_CHECKOUT}; "
            f"tar -xzf ~/{TARBALL} -C {REMOTE_CHECKOUT}; "
            f"[ -x {v}/bin/python ] || python3.11 -m venv {v}; "
            f"{v}/bin/pip install -q -e \"$HOME/miniend_jax[tpu]\"")


def worker_command(venv: str, main_args: list[str]) -> str:
    """The shell command each worker runs: the run, unbuffered (so that its lines stream as they come)."""
    return (f"cd {REMOTE_CHECKOUT} && {_remote(venv)}/bin/python -u -m miniend_jax.main "
            f"{shlex.join([*main_args, DISTRIBUTED])}")


def _pack(tarball: str, files: list[str] | None) -> None:
    """HEAD (`files` None) or the working-tree `files` into `tarball`."""
    if files is None:
        _git("archive", "--format=tar.gz", "-o", os.path.abspath(tarball), "HEAD")
        return
    with tarfile.open(tarball, "w:gz") as tar:
        for name in files:
            if os.path.lexists(ROOT / name):  # a tracked file deleted in the working tree is left out
                tar.add(ROOT / name, arcname=name, recursive=False)


def _count_workers(describe: list[str]) -> int:
    result = subprocess.run(describe, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    try:
        if result.returncode:
            raise ValueError((result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1])
        count = len(json.loads(result.stdout).get("networkEndpoints") or [])
        if count < 1:
            raise ValueError("it lists no networkEndpoints (is the TPU VM READY?)")
    except (ValueError, AttributeError) as e:
        raise LaunchError(f"{shlex.join(describe)} could not count the workers: {e}; check --tpu and --zone "
                          "(--project), or pass --num_workers") from None
    return count


def _run_workers(commands: list[list[str]], log_dir: str) -> list[int]:
    """Runs the workers' commands in parallel: worker 0's output on the console and in its log, each other
    worker's in its log. Returns their exit statuses (130 for all after Ctrl-C)."""
    logs = [open(os.path.join(log_dir, f"worker_{i}.log"), "w") for i in range(len(commands))]
    procs = []
    try:
        for i, command in enumerate(commands):
            out = subprocess.PIPE if i == 0 else logs[i]
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          text=True, errors="replace"))
        for line in procs[0].stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            logs[0].write(line)
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        print("stopped: the local ssh processes have ended; the runs on the workers are left to ssh's hangup "
              "and may go on", file=sys.stderr)
        return [130] * len(commands)
    finally:
        for log in logs:
            log.close()


def launch_tpu(args) -> int:
    """Packs, copies and installs this checkout on every worker of TPU VM `args.tpu`, then runs the run on
    each (module docstring). Returns the launcher's exit status.

    Raises:
      LaunchError: uncommitted changes to tracked files (without `--allow_dirty`), a config file git does not
        track, a TPU VM `gcloud ... describe` cannot count the workers of.
    """
    location = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])

    def tpu_vm(verb, *rest):
        return ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest]

    dirty = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()]
    if dirty and not args.allow_dirty:
        raise LaunchError(f"uncommitted changes to {', '.join(dirty)}: the workers get the committed checkout "
                          "(git archive HEAD); commit them, or pass --allow_dirty to copy the working tree's files")
    tracked = [name for name in _git("ls-files", "-z").split("\0") if name]
    if args.config_file not in tracked:
        raise LaunchError(f"--config={args.config_file} is not tracked by git in {ROOT}: the workers get only tracked "
                          "files; git add (and commit) it")
    log_dir = args.log_dir or os.path.join("launch_logs", f"{args.tpu}-{time.strftime('%Y%m%d-%H%M%S')}")
    tarball = os.path.join(log_dir, TARBALL)  # removed once copied
    describe = tpu_vm("describe", args.tpu, *location, "--format=json")
    pack = (shlex.join(["git", "-C", str(ROOT), "archive", "--format=tar.gz", "-o", tarball, "HEAD"]) if not dirty
            else f"git -C {shlex.quote(str(ROOT))} ls-files -z | tar -czf {shlex.quote(tarball)} "
                 f"-C {shlex.quote(str(ROOT))} --null -T -")
    scp = tpu_vm("scp", tarball, f"{args.tpu}:{TARBALL}", "--worker=all", *location)
    install = tpu_vm("ssh", args.tpu, *location, "--worker=all", f"--command={install_command(args.venv)}")

    def worker(i):
        return tpu_vm("ssh", args.tpu, *location, f"--worker={i}",
                      f"--command={worker_command(args.venv, args.main_args)}")

    if args.dry_run:
        if not args.num_workers:
            print(shlex.join(describe))
        print(pack)
        print(shlex.join(scp))
        print(shlex.join(install))
        if args.num_workers:
            for i in range(args.num_workers):
                print(shlex.join(worker(i)))
        else:
            print("# once per worker, WORKER from 0 to the number of networkEndpoints of the describe above - 1:")
            print(shlex.join(worker("WORKER")))
        return 0

    if not shutil.which("gcloud"):
        raise LaunchError("gcloud is not on PATH: install the Google Cloud CLI and `gcloud auth login`")
    num_workers = args.num_workers or _count_workers(describe)
    os.makedirs(log_dir, exist_ok=True)
    print(f"launch: {num_workers} workers of TPU {args.tpu}; logs in {log_dir}", flush=True)
    try:
        _pack(tarball, tracked if dirty else None)
        for step, command in (("copying the checkout to the workers", scp), ("installing it on the workers", install)):
            print(f"launch: {step}", flush=True)
            status = subprocess.run(command).returncode
            if status:
                print(f"error: {step} failed (exit {status}): {shlex.join(command)}", file=sys.stderr)
                return status
    finally:
        if os.path.exists(tarball):
            os.remove(tarball)
    print(f"launch: starting the run on {num_workers} workers; worker 0's output follows", flush=True)
    statuses = _run_workers([worker(i) for i in range(num_workers)], log_dir)
    for i, status in enumerate(statuses):
        log = f" (log: {os.path.join(log_dir, f'worker_{i}.log')})" if status else ""
        print(f"worker {i}: exit {status}{log}", flush=True)
    return next((s for s in statuses if s), 0)


# --- slurm -----------------------------------------------------------------------------------------------

def sbatch_script(args, job_name: str, script: str) -> str:
    """The sbatch script `script` of job `job_name`: one task per node, each running the run from this checkout."""
    python = os.path.join(args.venv, "bin", "python") if args.venv else sys.executable
    log = os.path.join(os.path.dirname(os.path.abspath(script)), f"{job_name}-%j.log")
    options = [f"--job-name={job_name}", f"--nodes={args.nodes}", "--ntasks-per-node=1"]
    options += [f"--gpus-per-node={args.gpus_per_node}"] if args.gpus_per_node else []
    options += [f"--{name}={value}" for name, value in (("partition", args.partition), ("time", args.time),
                                                          ("account", args.account)) if value]
    options.append(f"--output={log}")
    return "\n".join([
        "#!/bin/bash", *(f"#SBATCH {o}" for o in options),
        "# Written by `python -m miniend_jax.launch slurm`: every node runs the same command, and",
        "# jax.distributed.initialize finds the SLURM job itself.",
        f"cd {shlex.quote(str(ROOT))}",
        f"srun {shlex.quote(python)} -u -m miniend_jax.main {shlex.join([*args.main_args, DISTRIBUTED])}"]) + "\n"


def launch_slurm(args, workdir: str) -> int:
    """Writes the sbatch script and submits it; prints sbatch's job-id line. Returns the exit status.

    Raises:
      LaunchError: sbatch is not on PATH.
    """
    job_name = args.job_name or os.path.basename(workdir.rstrip("/")) or "miniend"
    script = args.script or os.path.join("launch_logs", f"{job_name}.sbatch")
    text = sbatch_script(args, job_name, script)
    command = ["sbatch", script]
    if args.dry_run:
        print(text, end="")
        print(shlex.join(command))
        return 0
    if not shutil.which("sbatch"):
        raise LaunchError("sbatch is not on PATH: run the launcher on a SLURM login node")
    os.makedirs(os.path.dirname(os.path.abspath(script)), exist_ok=True)
    with open(script, "w") as f:
        f.write(text)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        print(f"error: {shlex.join(command)} failed (exit {result.returncode}): {result.stderr.strip()}",
              file=sys.stderr)
        return result.returncode
    print(result.stdout.strip(), flush=True)
    print(f"launch: script {script}; log {os.path.dirname(os.path.abspath(script))}/{job_name}-<job id>.log")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring). Returns the exit status: 2 for bad input (one line on stderr)."""
    try:
        args, _, workdir, _ = prepare(sys.argv[1:] if argv is None else argv)
        return launch_tpu(args) if args.cluster == "tpu" else launch_slurm(args, workdir)
    except LaunchError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
