"""HF `transformers` T5 checkpoints in and out, without torch.

Load: a directory with `config.json` and `model.safetensors`, sharded safetensors with
`model.safetensors.index.json`, or `pytorch_model.bin` (optionally sharded with its index). The `.bin`
pickle is read by a restricted unpickler that rebuilds tensors as numpy arrays, so torch is never imported.

Export: `model.safetensors` + `config.json` (+ the tokenizer files when a SentencePiece model is given),
loadable by `transformers.T5ForConditionalGeneration.from_pretrained`.

Parameter layout: HF `nn.Linear.weight` is `[out, in]`; our kernels are `[in, out]`, so projections are
transposed both ways. Embedding and relative-position tables keep their layout.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import zipfile
from typing import Any, Iterator

import flax.linen as nn
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from miniend_jax import files
from miniend_jax.errors import CheckpointError, ConfigError
from miniend_jax.models.config import T5Config

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN_NAME = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"

_SUPPORTED_MODEL_TYPES = ("t5", "mt5")
_SUPPORTED_ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")
# Keys HF checkpoints may carry that this model does not use: aliases of the shared embedding, and
# a cross-attention position table some early T5 exports contain although T5 never reads it.
_IGNORED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                 "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")

Params = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# config.json <-> T5Config
# ---------------------------------------------------------------------------------------------
def config_from_hf(hf: dict, *, has_separate_lm_head: bool | None = None, **overrides) -> T5Config:
    """A `T5Config` from the dict of a HF `config.json`.

    The model is the one the installed transformers (5.x) builds from the same config.json:
    - whether the head is tied is decided by the weights when known (`has_separate_lm_head`: transformers
      keeps a `lm_head.weight` that differs from `shared.weight`), else by `tie_word_embeddings`;
    - T5 scales the decoder output by d_model**-0.5 when `scale_decoder_outputs` says so, or, in configs
      written before that key existed (transformers 4, the hub's), unless `tie_word_embeddings` is false;
    - mT5 never scales: transformers 5 writes `tie_word_embeddings: true` for mT5 with its separate head
      and no scaling key, and its MT5 model has no output scaling at all.
    `feed_forward_proj` decides the FFN (`is_gated_act` and `dense_act_fn`, which some configs also
    carry, are derived from it by transformers too).

    Args:
      hf: the parsed `config.json`.
      has_separate_lm_head: whether the weights hold an `lm_head.weight` distinct from `shared.weight`;
        None when the weights are not known.
      **overrides: `T5Config` fields set after conversion (e.g. `dtype`, `param_dtype`, `dropout_rate`).

    Returns:
      The `T5Config`.

    Raises:
      CheckpointError: not a T5-family config, or a required field is missing.
      ConfigError: the resulting config is invalid (e.g. a bad override).
    """
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if model_type not in _SUPPORTED_MODEL_TYPES or (
            architectures and not set(architectures) & set(_SUPPORTED_ARCHITECTURES)):
        raise CheckpointError(
            f"config.json describes model_type={model_type!r}, architectures={architectures}; miniend_jax "
            "loads T5-family encoder-decoders (model_type 't5' or 'mt5', T5ForConditionalGeneration). "
            "Point the path at a T5 checkpoint.")
    tie_flag = hf.get("tie_word_embeddings", True)
    tie = (not has_separate_lm_head) if has_separate_lm_head is not None else bool(tie_flag)
    if model_type == "mt5":
        scale = False  # transformers' MT5ForConditionalGeneration never scales, whatever the flags say
    else:
        scale = hf.get("scale_decoder_outputs", tie_flag is not False)
    try:
        fields = dict(
            vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
            num_heads=hf["num_heads"], num_encoder_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            feed_forward_proj=hf.get("feed_forward_proj", "relu"),
            tie_word_embeddings=tie, scale_decoder_outputs=bool(scale),
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
            dropout_rate=hf.get("dropout_rate", 0.1),
            pad_token_id=hf.get("pad_token_id", 0), eos_token_id=hf.get("eos_token_id", 1),
            decoder_start_token_id=hf.get("decoder_start_token_id", 0))
    except KeyError as missing:
        raise CheckpointError(f"config.json lacks the field {missing}; it is not a complete T5 config. "
                              "Re-save it with transformers' save_pretrained.") from None
    fields.update(overrides)
    return T5Config(**fields)


def config_to_hf(config: T5Config) -> dict:
    """The `config.json` dict of `config`, readable by transformers 4 and 5.

    `dtype` is `config.param_dtype`; `save_hf_checkpoint` overwrites it with the written tensors' dtype.
    """
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "is_encoder_decoder": True,
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "feed_forward_proj": config.feed_forward_proj,
        "tie_word_embeddings": config.tie_word_embeddings,
        "scale_decoder_outputs": config.scale_decoder_outputs,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "dropout_rate": config.dropout_rate,
        "initializer_factor": 1.0,
        "pad_token_id": config.pad_token_id,
        "eos_token_id": config.eos_token_id,
        "decoder_start_token_id": config.decoder_start_token_id,
        "use_cache": True,
        "dtype": config.param_dtype,
    }


# ---------------------------------------------------------------------------------------------
# Parameter names
# ---------------------------------------------------------------------------------------------
def _attention_names(hf_prefix: str, our_prefix: tuple[str, ...]) -> Iterator[tuple[str, tuple, bool]]:
    for hf_name, ours in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
        yield f"{hf_prefix}.{hf_name}.weight", our_prefix + (ours, "kernel"), True


def _mlp_names(config: T5Config, hf_prefix: str, our_prefix: tuple[str, ...]):
    inputs = ("wi_0", "wi_1") if config.is_gated else ("wi",)
    for name in inputs + ("wo",):
        yield f"{hf_prefix}.DenseReluDense.{name}.weight", our_prefix + ("mlp", name, "kernel"), True
    yield f"{hf_prefix}.layer_norm.weight", our_prefix + ("pre_mlp_layer_norm", "scale"), False


def parameter_names(config: T5Config) -> list[tuple[str, tuple[str, ...], bool]]:
    """Every (HF name, our parameter path, transpose?) of a model with `config`.

    Paths are in the unrolled layout (`layers_<i>`); `transpose` is True for projections, whose HF
    `nn.Linear.weight` is `[out, in]` and our kernel `[in, out]`. Names as HF `modeling_t5.py` writes them.
    """
    names = [("shared.weight", ("token_embedder", "embedding"), False)]
    for stack in ("encoder", "decoder"):
        names.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                      (stack, "relpos_bias", "rel_embedding"), False))
    for i in range(config.num_encoder_layers):
        hf, ours = f"encoder.block.{i}", ("encoder", f"layers_{i}")
        names += _attention_names(f"{hf}.layer.0.SelfAttention", ours + ("attention",))
        names.append((f"{hf}.layer.0.layer_norm.weight", ours + ("pre_attention_layer_norm", "scale"), False))
        names += _mlp_names(config, f"{hf}.layer.1", ours)
    names.append(("encoder.final_layer_norm.weight", ("encoder", "encoder_norm", "scale"), False))
    for i in range(config.num_decoder_layers):
        hf, ours = f"decoder.block.{i}", ("decoder", f"layers_{i}")
        names += _attention_names(f"{hf}.layer.0.SelfAttention", ours + ("self_attention",))
        names.append((f"{hf}.layer.0.layer_norm.weight", ours + ("pre_self_attention_layer_norm", "scale"), False))
        names += _attention_names(f"{hf}.layer.1.EncDecAttention", ours + ("encoder_decoder_attention",))
        names.append((f"{hf}.layer.1.layer_norm.weight", ours + ("pre_cross_attention_layer_norm", "scale"), False))
        names += _mlp_names(config, f"{hf}.layer.2", ours)
    names.append(("decoder.final_layer_norm.weight", ("decoder", "decoder_norm", "scale"), False))
    if not config.tie_word_embeddings:
        names.append(("lm_head.weight", ("decoder", "logits_dense", "kernel"), True))
    return names


def expected_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """Shape of every HF tensor of a model with `config` (HF layout): {HF name: shape}."""
    from miniend_jax.models.t5 import abstract_params  # local: keeps this module light to import
    ours = traverse_util.flatten_dict(nn.unbox(abstract_params(config.replace(scan_layers=False))))
    shapes = {}
    for hf_name, path, transpose in parameter_names(config):
        shape = tuple(ours[path].shape)
        shapes[hf_name] = shape[::-1] if transpose else shape
    return shapes


def state_dict_to_params(state_dict: dict[str, np.ndarray], config: T5Config) -> Params:
    """HF tensors (numpy) -> our nested params (numpy, `config.param_dtype`, in the layout
    `config.scan_layers` asks for), checking every shape.

    Args:
      state_dict: {HF name: numpy array in HF layout}, any float dtype; the aliases in `_IGNORED_KEYS`
        may be present and are dropped.
      config: the model the tensors belong to.

    Returns:
      The unboxed parameter tree of `T5(config)`, numpy arrays cast to `config.param_dtype`.

    Raises:
      CheckpointError: a tensor is missing, unexpected, or of the wrong shape.
    """
    shapes = expected_shapes(config)
    missing = [name for name in shapes if name not in state_dict]
    if missing:
        raise CheckpointError(
            f"the checkpoint lacks {len(missing)} weight(s) its config.json implies, e.g. {missing[:3]}; "
            "config.json and the weights do not belong together, or the file is incomplete.")
    unexpected = sorted(set(state_dict) - set(shapes) - set(_IGNORED_KEYS))
    if unexpected:
        raise CheckpointError(
            f"the checkpoint has {len(unexpected)} weight(s) a T5 of this config does not have, e.g. "
            f"{unexpected[:3]}; check that config.json (layers, feed_forward_proj) matches the weights.")
    dtype = jnp.dtype(config.param_dtype)
    flat = {}
    for hf_name, path, transpose in parameter_names(config):
        value = np.asarray(state_dict[hf_name])
        if tuple(value.shape) != shapes[hf_name]:
            raise CheckpointError(
                f"weight {hf_name} has shape {tuple(value.shape)} but the config implies "
                f"{shapes[hf_name]}; config.json (d_model, d_kv, num_heads, d_ff, vocab_size) does not "
                "match the weights.")
        flat[path] = (value.T if transpose else value).astype(dtype)
    from miniend_jax.models.t5 import to_layout
    return to_layout(traverse_util.unflatten_dict(flat), config)


def params_to_state_dict(params: Params, config: T5Config) -> dict[str, np.ndarray]:
    """Our params (boxed or not, either layout, any device) -> HF-named numpy tensors, contiguous.

    Returns:
      {HF name: numpy array in HF layout}, in the parameters' own dtype.

    Raises:
      CheckpointError: a parameter `config` implies is missing.
    """
    from miniend_jax.models.t5 import unstack_layers
    flat = traverse_util.flatten_dict(unstack_layers(nn.unbox(params)))
    out = {}
    for hf_name, path, transpose in parameter_names(config):
        if path not in flat:
            raise CheckpointError(f"params lack {'/'.join(path)}; they do not belong to this config.")
        value = np.asarray(flat[path])
        out[hf_name] = np.ascontiguousarray(value.T if transpose else value)
    return out


# ---------------------------------------------------------------------------------------------
# Reading weight files without torch
# ---------------------------------------------------------------------------------------------
def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    tensors = {}
    with safe_open(path, framework="numpy") as f:
        names = list(f.keys())
        bf16 = [name for name in names if f.get_slice(name).get_dtype() == "BF16"]
        for name in names:
            if name not in bf16:
                tensors[name] = f.get_tensor(name)
    if bf16:  # numpy has no bfloat16; the flax reader returns ml_dtypes-backed arrays
        with safe_open(path, framework="flax") as f:
            for name in bf16:
                tensors[name] = np.asarray(f.get_tensor(name))
    return tensors


_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


class _TorchZipUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint into numpy, allowing only tensor-rebuilding globals."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *unused: data
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return np.dtype(_TORCH_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        kind, dtype, key, _location, _numel = pid
        if kind != "storage" or not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"unsupported storage record {pid!r}")
        data = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(data, dtype=dtype)


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a zip-format torch checkpoint (torch>=1.6); re-save it with "
                              "save_pretrained, which writes safetensors.")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one data.pkl inside the archive, found {pickles}.")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as f:
            state = _TorchZipUnpickler(f, archive, prefix).load()
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict of tensors.")
    return dict(state)


def _read_index(path: str) -> list[str]:
    """The shard files a sharded-checkpoint index names (each checked to exist)."""
    try:
        weight_map = json.loads(files.read_text(path)).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise CheckpointError(f"{path} is not a valid sharded-checkpoint index ({error}); download it again "
                              "or re-save the model with save_pretrained.") from None
    if not weight_map or not isinstance(weight_map, dict):
        raise CheckpointError(f"{path} has no weight_map; it is not a sharded-checkpoint index.")
    shards = sorted(set(weight_map.values()))
    directory = files.parent(path)
    missing = [shard for shard in shards if not files.isfile(files.join(directory, shard))]
    if missing:
        raise CheckpointError(f"{path} names {len(shards)} shard file(s) but {', '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} missing from {directory}; download "
                              "every shard of the checkpoint.")
    return shards


def _read_file(reader, path: str) -> dict[str, np.ndarray]:
    """`reader(path)`, with any failure to read the file (truncated, corrupt, unreadable) as a
    `CheckpointError` naming the file. A cloud file is read from its local copy (`files.local_copy`)."""
    try:
        return reader(files.local_copy(path))
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors, zipfile and pickle each raise their own types
        raise CheckpointError(f"cannot read the weight file {path} ({type(error).__name__}: {str(error)[:200]}); "
                              "it is truncated or corrupt: download it again or re-save the model with "
                              "save_pretrained.") from None


def read_weights(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of the HF checkpoint in `directory`, as numpy arrays keyed by HF name.

    Raises:
      CheckpointError: no weight file, a shard the index names is missing, or a file cannot be read.
    """
    def here(name):
        return files.join(directory, name)

    def read_all(reader, index):
        tensors = {}
        for shard in _read_index(here(index)):
            tensors.update(_read_file(reader, here(shard)))
        return tensors

    if files.exists(here(SAFETENSORS_NAME)):
        return _read_file(_read_safetensors, here(SAFETENSORS_NAME))
    if files.exists(here(SAFETENSORS_INDEX)):
        return read_all(_read_safetensors, SAFETENSORS_INDEX)
    if files.exists(here(TORCH_BIN_NAME)):
        return _read_file(_read_torch_bin, here(TORCH_BIN_NAME))
    if files.exists(here(TORCH_BIN_INDEX)):
        return read_all(_read_torch_bin, TORCH_BIN_INDEX)
    raise CheckpointError(
        f"no weights in {directory}: expected {SAFETENSORS_NAME}, {SAFETENSORS_INDEX}, {TORCH_BIN_NAME} "
        f"or {TORCH_BIN_INDEX}. Download the full checkpoint (not only its config) or fix the path.")


def read_config(directory: str) -> dict:
    """The parsed `config.json` of the HF checkpoint in `directory`.

    Raises:
      CheckpointError: no such directory, no `config.json`, or it is not a JSON object.
    """
    if not files.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory} does not exist; fix the path.")
    path = files.join(directory, CONFIG_NAME)
    if not files.exists(path):
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}; a HF checkpoint directory needs one "
                              "beside its weights.")
    try:
        config = json.loads(files.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); download it again or re-save the model "
                              "with save_pretrained.") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a {type(config).__name__}, not a config object; it is not a HF "
                              "config.json.")
    return config


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def load_hf_checkpoint(directory: str, **config_overrides) -> tuple[T5Config, Params]:
    """Loads a HF T5 directory into (`T5Config`, numpy params).

    `config_overrides` set fields the checkpoint does not decide, such as `dtype` (compute),
    `param_dtype` (the params are cast to it) or `dropout_rate`.

    Returns:
      (config, unboxed numpy params in `config.param_dtype` and the layout `config.scan_layers` names).

    Raises:
      CheckpointError: not a T5-family checkpoint, missing or unreadable files, weights that do not
        match `config.json`, or overrides that make the config invalid.
      ConfigError: `config.json` itself describes an invalid model (checked before any override).
    """
    hf_config = read_config(directory)
    config_from_hf(hf_config)  # architecture check before reading any weights
    weights = read_weights(directory)
    if "shared.weight" not in weights:
        # Some published checkpoints carry the embedding only under its per-stack aliases; transformers
        # ties those to `shared` on load, so the encoder's copy is the shared table.
        for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if alias in weights:
                weights["shared.weight"] = weights[alias]
                break
    separate_head = "lm_head.weight" in weights and "shared.weight" in weights and not np.array_equal(
        weights["lm_head.weight"], weights["shared.weight"])
    if hf_config.get("tie_word_embeddings") is False and "lm_head.weight" not in weights:
        raise CheckpointError(f"{directory}: config.json declares an untied head "
                              "(tie_word_embeddings=false) but the weights have no lm_head.weight.")
    if not separate_head:
        weights.pop("lm_head.weight", None)
    try:
        config = config_from_hf(hf_config, has_separate_lm_head=separate_head, **config_overrides)
    except ConfigError as e:
        raise CheckpointError(f"{directory}/config.json: {e}") from None
    return config, state_dict_to_params(weights, config)


def save_hf_checkpoint(directory: str, config: T5Config, params: Params, *,
                       spiece_model: str | None = None, extra_ids: int = 100) -> None:
    """Writes `config` + `params` as a HF T5 directory (float32 safetensors unless params are bf16).

    With `spiece_model`, the tokenizer files are written too (see `checkpoints/tokenizer.py`). Every file
    is first written to a staging directory beside `directory` and moved into place only when all were
    written, so a failure (a bad vocabulary, a full disk) leaves `directory` as it was.

    Args:
      directory: created if needed; existing files of the same names are replaced.
      config: the model config (written as `config.json`, see `config_to_hf`).
      params: the model's parameters, boxed or not, either layout.
      spiece_model: path of a SentencePiece model, or None for no tokenizer files.
      extra_ids: the number of sentinel ids of the tokenizer.

    Raises:
      CheckpointError: `params` do not match `config`, or `spiece_model` does not exist.
    """
    import shutil
    import tempfile

    from safetensors.numpy import save_file

    state_dict = params_to_state_dict(params, config)
    if any(v.dtype == ml_dtypes.bfloat16 for v in state_dict.values()):
        # safetensors.numpy cannot write bfloat16: export float32, which every loader reads.
        state_dict = {k: v.astype(np.float32) for k, v in state_dict.items()}
    # Staged beside the target where it is local (so the moves below are renames), else in a local
    # temporary folder uploaded file by file: config.json last, so a HF loader never finds a half export.
    directory = files.absolute(directory)  # `~` expanded where local
    parent = None if files.is_cloud(directory) else os.path.dirname(directory)
    if parent:
        os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{directory.rstrip('/').rsplit('/', 1)[-1]}.", dir=parent)
    try:
        if spiece_model is not None:
            from miniend_jax.checkpoints.tokenizer import save_hf_tokenizer
            save_hf_tokenizer(spiece_model, staging, extra_ids=extra_ids)
        save_file(state_dict, os.path.join(staging, SAFETENSORS_NAME), metadata={"format": "pt"})
        hf_config = config_to_hf(config)
        hf_config["dtype"] = str(next(iter(state_dict.values())).dtype)
        with open(os.path.join(staging, CONFIG_NAME), "w") as f:
            json.dump(hf_config, f, indent=2, sort_keys=True)
        if parent is None:
            files.copy_tree(staging, directory, last=CONFIG_NAME)
            return
        os.makedirs(directory, exist_ok=True)
        for name in sorted(os.listdir(staging), key=lambda n: n == CONFIG_NAME):  # config.json last
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
