"""Shared fixtures: seeded random PyTorch `transformers` T5 models saved with `save_pretrained`."""

import atexit
import copy
import os
import pathlib
import shutil
import tempfile

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _share_compiled_programs() -> None:
    """One JAX persistent compilation cache for the whole test run: its xdist workers and every
    subprocess (the CLI runs, restarts after SIGKILL, the multi-process runs) inherit the directory, so a
    program compiled once (the tiny config's train step, say) is read back instead of compiled again.
    XLA's cache key covers the program, the compile options and the backend, so a hit is the same
    executable. The directory is made by the first process that loads this file (the xdist controller)
    and removed when it exits; a `JAX_COMPILATION_CACHE_DIR` set by the caller is used as it is."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    directory = tempfile.mkdtemp(prefix="miniend-jax-test-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(directory, ignore_errors=True))


_share_compiled_programs()


def _keep_local_copies_in_the_run() -> None:
    """Local copies of cloud inputs (`miniend_jax.files.local_copy`) go to one folder of this test run, made
    by the first process and removed when it exits, never to the user's `~/.cache/miniend_jax`."""
    if "MINIEND_CACHE_DIR" in os.environ:
        return
    directory = tempfile.mkdtemp(prefix="miniend-test-files-cache-")
    os.environ["MINIEND_CACHE_DIR"] = directory
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(directory, ignore_errors=True))


_keep_local_copies_in_the_run()


def _compile_for_tests() -> None:
    """XLA's CPU backend at LLVM optimisation level 0 for the whole run (subprocesses inherit it): the
    test programs are tiny, so compiling them is most of their cost and the matrix products run in
    library kernels either way. XLA's graph passes (fusion, sharding, buffer assignment) are unchanged,
    and numerical bounds come from float64 references, not from one compiler's rounding."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


_compile_for_tests()

# The test files that take longest (minutes: subprocess runs, compiles for 8 simulated devices), longest
# first. They are collected last by name; started first, the two xdist workers (`--dist loadfile` hands
# out whole files in collection order) end together instead of one running them alone at the end.
LONGEST_FIRST = ("tests/test_main.py", "tests/test_cloud_storage.py", "tests/test_multiprocess.py", "tests/train/test_resume.py",
                 "tests/test_parallel.py", "tests/test_experiment.py", "tests/test_configs.py",
                 "tests/modes/test_plan.py", "tests/tasks/test_hf_text.py", "tests/train/test_step.py",
                 "tests/test_bench.py", "tests/modes/test_finetune.py", "tests/models/test_t5.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
SHARED_DATA = ROOT.parent / "shared" / "data"
SPIECE = SHARED_DATA / "t5_spiece" / "spiece.model"

# Three architectures the acceptance criteria name. Small bucket counts and distances make the
# logarithmic relative-position buckets appear at these short lengths.
GOLDEN_CONFIGS = {
    # T5 v1.0: ReLU FFN, tied embeddings, decoder output scaled before the tied head.
    "v1_0": dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 feed_forward_proj="relu", tie_word_embeddings=True,
                 relative_attention_num_buckets=8, relative_attention_max_distance=12),
    # T5 v1.1 / Flan: gated-GELU, separate lm_head, no scaling.
    "v1_1": dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                 relative_attention_num_buckets=16, relative_attention_max_distance=20),
    # num_heads * d_kv (3 * 12 = 36) != d_model (32), 3 encoder and 2 decoder layers.
    "uneven": dict(vocab_size=96, d_model=32, d_kv=12, d_ff=40, num_layers=3, num_decoder_layers=2,
                   num_heads=3, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                   relative_attention_num_buckets=8, relative_attention_max_distance=10),
}


def build_hf_model(name: str, seed: int = 0):
    """A seeded random `T5ForConditionalGeneration`; untied configs get a separate random lm_head
    (transformers 5 ties on construction; real v1.1 checkpoints are untied)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    kwargs = dict(GOLDEN_CONFIGS[name])
    tie = kwargs["tie_word_embeddings"]
    config = transformers.T5Config(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                                   dropout_rate=0.0, **kwargs)
    model = transformers.T5ForConditionalGeneration(config)
    with torch.no_grad():  # HF's default init is tiny for layer norms and biases; widen everything
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    if not tie:
        model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model) * 0.5)
    return model.eval()


@pytest.fixture(scope="session", params=sorted(GOLDEN_CONFIGS))
def golden(request, tmp_path_factory):
    """(name, HF model, directory it was saved to with save_pretrained)."""
    model = build_hf_model(request.param)
    directory = tmp_path_factory.mktemp(f"hf_{request.param}")
    model.save_pretrained(directory)
    return request.param, model, str(directory)


@pytest.fixture(scope="session")
def golden64(golden):
    """The golden model in float64: the reference float32 results are measured against."""
    return copy.deepcopy(golden[1]).double()


# Bounds for float32 results come from the numerics, not from one CPU: GEMM kernels and FMA order differ
# between Intel and AMD machines, so two float32 computations of the same function differ by rounding
# that grows with depth and magnitude (measured 1e-5 on values near 1 after three layers).
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def assert_close_to_float64(ours, reference64, peer32, *, factor: float = 8.0, err_msg: str = ""):
    """A float32 result is as close to the float64 reference as an independent float32 implementation
    (`peer32`, PyTorch on the same weights and inputs) is, within `factor`.

    Elementwise bound: `|ours - reference64| <= factor * (e + eps32 * |reference64|)`, where `e` is the
    peer's largest deviation from the reference (at least eps32 times the reference's magnitude). At
    these sizes the peer's deviation is about 1e-6 - 2e-5 and ours 0.5x - 3x of it; a real fault (a wrong
    mask, a relative-position bucket off by one, a missing scale) is off by 1e-2 or more.
    """
    ours, reference64, peer32 = (np.asarray(x, np.float64) for x in (ours, reference64, peer32))
    assert ours.shape == reference64.shape == peer32.shape, (ours.shape, reference64.shape, peer32.shape)
    scale = float(np.abs(reference64).max())
    peer_error = max(float(np.abs(peer32 - reference64).max()), FLOAT32_EPS * scale)
    np.testing.assert_allclose(ours, reference64, rtol=factor * FLOAT32_EPS, atol=factor * peer_error,
                               err_msg=f"{err_msg} (peer float32 deviation {peer_error:.2e})")


def assert_float32_equivalent(actual, expected, *, ulps: float = 64.0, err_msg: str = ""):
    """Two float32 computations of the same function (other layout, sharding, remat or accumulation
    order) agree to float32 rounding: `|actual - expected| <= ulps * eps32 * (|expected| + max|expected|)`.

    eps32 is 1.19e-7, so the default bound is 7.6e-6 relative to the tensor's magnitude: a few rounding
    steps per layer of these shallow test models, far below any real fault (which changes values by
    percent)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=ulps * FLOAT32_EPS, atol=ulps * FLOAT32_EPS * scale,
                               err_msg=err_msg)


def adam_update_tolerance(learning_rate: float, eps: float, clip_norm: float, steps: int = 1,
                          ulps: float = 64.0) -> float:
    """How far parameters after `steps` AdamW updates may drift between two float32 computations of the
    same gradients (another sharding, accumulation order or layout).

    An update coordinate `lr * m / (sqrt(v) + eps)` moves by at most `lr * delta / eps` for a gradient
    perturbation `delta` (its derivative peaks at g = 0); clipped gradients are at most `clip_norm` in
    size, so float32 rounding perturbs them by at most `ulps * eps32 * clip_norm`. Tests that use this
    choose `eps` so that the bound stays far below one update (`lr`), which a real fault moves by.
    """
    return steps * learning_rate * ulps * FLOAT32_EPS * clip_norm / eps


def update_tolerance(optimizer: str, learning_rate: float, eps: float, clip_norm: float, steps: int = 1,
                     ulps: float = 64.0) -> float:
    """`adam_update_tolerance` for any of the optimizers (`miniend_jax/train/state.py`). A relative step
    multiplies the update by max(1e-3, RMS(p)), at most 2 for T5's initialisation (embeddings and layer-norm
    scales near 1). Adafactor's `g / sqrt(V)` with `eps` added to `g^2` has slope at most `1 / sqrt(eps)`,
    in place of Adam's `1 / eps`."""
    if optimizer == "adamw":
        return adam_update_tolerance(learning_rate, eps, clip_norm, steps, ulps)
    if optimizer == "adamw_scaled":
        return 2 * adam_update_tolerance(learning_rate, eps, clip_norm, steps, ulps)
    return 2 * steps * learning_rate * ulps * FLOAT32_EPS * clip_norm / eps ** 0.5


def padded_batch(vocab_size: int, seed: int = 0):
    """A padded encoder/decoder batch of unequal lengths (0 = padding, no EOS mid-sequence)."""
    rng = np.random.default_rng(seed)
    enc_lengths, dec_lengths = [13, 7, 3], [9, 5, 2]
    enc = np.zeros((3, 13), np.int32)
    targets = np.zeros((3, 9), np.int32)
    for i, (le, ld) in enumerate(zip(enc_lengths, dec_lengths)):
        enc[i, :le] = rng.integers(2, vocab_size, le)
        targets[i, :ld] = rng.integers(2, vocab_size, ld)
    dec_inputs = np.concatenate([np.zeros((3, 1), np.int32), targets[:, :-1]], axis=1)
    return enc, dec_inputs, targets


def torch_logits(model, enc, dec_inputs):
    import torch
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc, dtype=torch.long),
                    attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                    decoder_input_ids=torch.tensor(dec_inputs, dtype=torch.long))
    return out.logits.numpy()


def config_with(name: str, **changes):
    """`tests/configs/<name>.py`'s config with dotted-key changes, e.g. `{"train.steps": 5}`."""
    import importlib
    import sys
    sys.path.insert(0, str(ROOT))
    config = importlib.import_module(f"tests.configs.{name}").get_config()
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config
