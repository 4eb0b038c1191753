"""HF checkpoints in and out: formats, round trip through PyTorch, and clear errors on bad input."""

import json
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from miniend_jax.checkpoints.hf import load_hf_checkpoint, save_hf_checkpoint
from miniend_jax.errors import CheckpointError
from miniend_jax.models.t5 import T5
from tests.conftest import SPIECE, assert_close_to_float64, padded_batch, torch_logits


def _logits(config, params, enc, dec):
    return np.asarray(T5(config).apply({"params": params}, enc, dec).logits)


def test_export_reloads_in_pytorch_with_same_logits(golden, golden64, tmp_path):
    _, hf_model, directory = golden
    config, params = load_hf_checkpoint(directory)
    save_hf_checkpoint(str(tmp_path), config, params, spiece_model=str(SPIECE))
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    assert (reloaded.lm_head.weight is reloaded.shared.weight) == config.tie_word_embeddings
    enc, dec, _ = padded_batch(config.vocab_size)
    assert_close_to_float64(torch_logits(reloaded, enc, dec), torch_logits(golden64, enc, dec),
                            torch_logits(hf_model, enc, dec))
    # And back into miniend_jax: identical parameters.
    config2, params2 = load_hf_checkpoint(str(tmp_path))
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    assert os.path.exists(tmp_path / "spiece.model") and os.path.exists(tmp_path / "tokenizer_config.json")


def test_scanned_params_export_the_same_weights(tmp_path):
    """Import into the scanned layout (layers stacked) and export again: the same HF tensors."""
    model, (config, params) = _hf_reference("v1_1", tmp_path)
    scanned_config, scanned = load_hf_checkpoint(str(tmp_path / "ref"), scan_layers=True)
    assert scanned_config == config.replace(scan_layers=True)
    assert scanned["decoder"]["layers"]["mlp"]["wo"]["kernel"].shape[0] == config.num_decoder_layers
    save_hf_checkpoint(str(tmp_path / "out"), scanned_config, scanned)
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    reference = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(exported) <= set(reference) and len(exported) >= len(reference) - 3  # tied copies aside
    for name, value in exported.items():
        np.testing.assert_array_equal(value, reference[name], err_msg=name)


def _hf_reference(name, tmp_path):
    from tests.conftest import build_hf_model
    model = build_hf_model(name)
    model.save_pretrained(tmp_path / "ref")
    return model, load_hf_checkpoint(str(tmp_path / "ref"))


def test_pytorch_bin_loads_without_torch_import(tmp_path):
    directory, (config, params) = _bin(tmp_path, "v1_1")
    config2, params2 = load_hf_checkpoint(str(directory))
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_torch_bin_reader_runs_in_a_process_without_torch(tmp_path):
    directory, _ = _bin(tmp_path, "v1_0")
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    assert name.split('.')[0] not in ('torch', 'tensorflow'), name\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "from miniend_jax.checkpoints.hf import load_hf_checkpoint\n"
            f"config, params = load_hf_checkpoint({str(directory)!r})\n"
            "print(config.d_model)\n")
    import subprocess, sys
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "32"


def test_sharded_safetensors_and_bfloat16(tmp_path):
    # Half of the shards in bfloat16 (written through torch), as real checkpoints often are.
    directory, (config, params) = _sharded(tmp_path, "uneven", bfloat16_shard=True)
    config2, params2 = load_hf_checkpoint(str(directory))
    assert config2 == config
    flat2 = jax.tree_util.tree_leaves(params2)
    assert all(leaf.dtype == np.float32 for leaf in flat2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2), params2, params)
    config16, params16 = load_hf_checkpoint(str(directory), param_dtype="bfloat16")
    assert all(leaf.dtype == ml_dtypes.bfloat16 for leaf in jax.tree_util.tree_leaves(params16))


# -- bad input -----------------------------------------------------------------------------------
def test_directory_without_weights(tmp_path):
    _hf_reference("v1_0", tmp_path)
    (tmp_path / "ref" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights in .*model.safetensors"):
        load_hf_checkpoint(str(tmp_path / "ref"))


def test_missing_directory_and_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hf_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_hf_checkpoint(str(tmp_path))


@pytest.mark.parametrize("field,value,message", [
    ("d_ff", 128, r"DenseReluDense.wi.weight has shape \(64, 32\) but the config implies \(128, 32\)"),
    ("num_layers", 3, "lacks .* weight"),
], ids=["weight_shape", "layer_count"])
def test_config_that_does_not_match_the_weights(tmp_path, field, value, message):
    _hf_reference("v1_0", tmp_path)
    path = tmp_path / "ref" / "config.json"
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_hf_checkpoint(str(tmp_path / "ref"))


def test_config_of_another_architecture(tmp_path):
    _hf_reference("v1_0", tmp_path)
    bert = transformers.BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    bert.save_pretrained(tmp_path / "ref")
    with pytest.raises(CheckpointError, match="model_type='bert'.*bart, mt5, t5"):
        load_hf_checkpoint(str(tmp_path / "ref"))


def test_config_json_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_hf_checkpoint(str(tmp_path))


def _sharded(tmp_path, name="v1_1", bfloat16_shard=False):
    """The reference checkpoint re-written as two safetensors shards with an index (the second in
    bfloat16 with `bfloat16_shard`); returns the directory and the reference's (config, params)."""
    _, reference = _hf_reference(name, tmp_path)
    tensors = load_file(str(tmp_path / "ref" / "model.safetensors"))
    directory = tmp_path / "sharded"
    directory.mkdir()
    shutil.copy(tmp_path / "ref" / "config.json", directory)
    names = sorted(tensors)
    weight_map = {}
    for shard, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        file = f"model-{shard + 1:05d}-of-00002.safetensors"
        if shard == 1 and bfloat16_shard:
            import safetensors.torch
            safetensors.torch.save_file({n: torch.from_numpy(tensors[n]).bfloat16() for n in part},
                                        str(directory / file))
        else:
            save_file({n: tensors[n] for n in part}, str(directory / file))
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return directory, reference


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bin(tmp_path, name="v1_0"):
    """The reference checkpoint as `pytorch_model.bin`; returns the directory and its (config, params)."""
    model, reference = _hf_reference(name, tmp_path)
    directory = tmp_path / "bin"
    directory.mkdir()
    shutil.copy(tmp_path / "ref" / "config.json", directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory, reference


# Every way a weight file can be missing, truncated or corrupt ends in the project's error naming it.
@pytest.mark.parametrize("fault", ["shard_missing", "shard_truncated", "index_not_json", "index_without_map",
                                   "safetensors_truncated", "safetensors_garbage", "bin_truncated", "bin_garbage"])
def test_unreadable_weight_files_name_the_file(tmp_path, fault):
    if fault.startswith("shard") or fault.startswith("index"):
        directory, _ = _sharded(tmp_path)
        shard, index = directory / "model-00002-of-00002.safetensors", directory / "model.safetensors.index.json"
        {"shard_missing": shard.unlink, "shard_truncated": lambda: _truncate(shard),
         "index_not_json": lambda: index.write_text("{\"weight_map\": "),
         "index_without_map": lambda: index.write_text("{}")}[fault]()
        named = {"shard_missing": shard.name, "shard_truncated": shard.name}.get(fault, index.name)
    elif fault.startswith("safetensors"):
        _hf_reference("v1_0", tmp_path)
        directory = tmp_path / "ref"
        weights = directory / "model.safetensors"
        _truncate(weights) if fault.endswith("truncated") else weights.write_bytes(b"\x00garbage" * 100)
        named = weights.name
    else:
        directory, _ = _bin(tmp_path)
        weights = directory / "pytorch_model.bin"
        _truncate(weights) if fault.endswith("truncated") else weights.write_bytes(b"PK\x03\x04garbage" * 100)
        named = weights.name
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")) as error:
        load_hf_checkpoint(str(directory))
    assert "download" in str(error.value) or "re-save" in str(error.value) or "checkpoint" in str(error.value)


def test_embedding_only_under_its_stack_aliases_loads_like_transformers(golden, golden64, tmp_path):
    """Some published checkpoints have no `shared.weight`, only `encoder.embed_tokens.weight` and
    `decoder.embed_tokens.weight` (plus `lm_head.weight`): transformers loads them; so do we, to its logits."""
    name, hf_model, directory = golden
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    shared = tensors.pop("shared.weight")
    tensors["encoder.embed_tokens.weight"] = tensors["decoder.embed_tokens.weight"] = shared
    if "lm_head.weight" not in tensors:  # the tied v1.0 model: its head is the embedding
        tensors["lm_head.weight"] = shared
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(directory, "config.json"), tmp_path)
    reference = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    enc, dec, _ = padded_batch(96)
    theirs = torch_logits(reference, enc, dec)
    assert_close_to_float64(theirs, torch_logits(golden64, enc, dec), torch_logits(hf_model, enc, dec))
    config, params = load_hf_checkpoint(str(tmp_path))
    assert_close_to_float64(_logits(config, params, enc, dec), torch_logits(golden64, enc, dec), theirs)


def test_a_failed_export_leaves_the_directory_as_it_was(tmp_path):
    """The tokenizer cannot be written (no such vocabulary): the earlier export stays whole, and no
    staging directory is left beside it."""
    _, (config, params) = _hf_reference("v1_0", tmp_path)
    out = tmp_path / "export"
    save_hf_checkpoint(str(out), config, params, spiece_model=str(SPIECE))
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    changed = jax.tree.map(lambda x: x + 1.0, params)
    with pytest.raises(CheckpointError, match="does not exist"):
        save_hf_checkpoint(str(out), config, changed, spiece_model=str(tmp_path / "missing.model"))
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["export", "ref"]
