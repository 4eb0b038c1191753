"""HF `transformers` checkpoints in and out, of every model family, without torch.

Load: a directory with `config.json` and `model.safetensors`, sharded safetensors with
`model.safetensors.index.json`, or `pytorch_model.bin` (optionally sharded with its index). The `.bin`
pickle is read by a restricted unpickler that rebuilds tensors as numpy arrays, so torch is never imported.
`config.json`'s `model_type` picks the family; the family's module (`FORMATS`: `hf_t5.py`, `hf_bart.py`)
converts the config and the tensor names and layouts.

Export: `model.safetensors` + `config.json` (+ the tokenizer files when a vocabulary is given), loadable
by transformers' `AutoModelForSeq2SeqLM.from_pretrained`.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from miniend_jax import files
import miniend_jax.checkpoints.hf_bart as hf_bart
import miniend_jax.checkpoints.hf_t5 as hf_t5
from miniend_jax.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN_NAME = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"

# Each family's HF module, by the family names of `models/registry.py`. A module gives `MODEL_TYPES`,
# `config_from_hf(hf, **overrides)`, `config_to_hf(config)`, `load(hf_config, weights, directory, **overrides)`,
# `params_to_state_dict(params, config)`, `save_tokenizer(vocab, directory, extra_ids)` and
# `extra_files(config)` (more JSON files of the export, e.g. `generation_config.json`).
FORMATS = {"t5": hf_t5, "bart": hf_bart}

Params = dict[str, Any]


def format_of_hf(hf_config: dict):
    """The family module that reads a parsed `config.json` (by `model_type`).

    Raises:
      CheckpointError: no family reads this `model_type`, naming the ones that are read.
    """
    model_type = hf_config.get("model_type")
    for module in FORMATS.values():
        if model_type in module.MODEL_TYPES:
            return module
    known = sorted(t for module in FORMATS.values() for t in module.MODEL_TYPES)
    raise CheckpointError(f"config.json describes model_type={model_type!r}, architectures="
                          f"{hf_config.get('architectures') or []}; miniend_jax reads the encoder-decoders "
                          f"{', '.join(known)}. Point the path at one of those.")


def format_of(config):
    """The HF module of a model config's family."""
    return FORMATS[type(config).family]


def config_from_hf(hf_config: dict, **overrides):
    """The model config (of the family `model_type` names) of a parsed HF `config.json`, without weights.

    Raises:
      CheckpointError: an unknown `model_type`, or a config that family cannot read.
      ConfigError: the resulting config is invalid.
    """
    return format_of_hf(hf_config).config_from_hf(hf_config, **overrides)


def generation_settings(directory: str) -> dict:
    """The decoding settings a HF checkpoint asks for (`generation_config.json`; for BART also a
    transformers-4 `config.json`), as its family reads them: HF `GenerationConfig` names, pipeline ids.

    Raises:
      CheckpointError: config.json is unreadable or of a family this version does not read.
      ConfigError: generation_config.json exists but is not a JSON object.
    """
    from miniend_jax.jsonl import read_json_object
    # Without config.json (a directory being assembled) the family is unknown: ids are taken as they are.
    hf_config = read_config(directory) if files.isfile(files.join(directory, CONFIG_NAME)) else {}
    path = files.join(directory, "generation_config.json")
    generation = None
    if files.isfile(path):
        try:
            generation = read_json_object(path)
        except ValueError as error:
            raise ConfigError(f"{path} cannot be read ({error}); repair or delete it, or set "
                              "decode.length_penalty_rule to 't5' or 'hf'.") from None
    return (format_of_hf(hf_config) if hf_config else hf_t5).generation_settings(hf_config, generation)


def config_to_hf(config) -> dict:
    """The `config.json` dict of `config` (any family), readable by transformers 4 and 5."""
    return format_of(config).config_to_hf(config)


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
def load_hf_checkpoint(directory: str, **config_overrides) -> tuple[Any, Params]:
    """Loads a HF directory (any family `FORMATS` reads) into (model config, numpy params).

    `config_overrides` set fields the checkpoint does not decide, such as `dtype` (compute),
    `param_dtype` (the params are cast to it) or `dropout_rate`.

    Returns:
      (config, unboxed numpy params in `config.param_dtype` and the layout `config.scan_layers` names).

    Raises:
      CheckpointError: not a checkpoint of a family this version reads, missing or unreadable files, weights that do not
        match `config.json`, or overrides that make the config invalid.
      ConfigError: `config.json` itself describes an invalid model (checked before any override).
    """
    hf_config = read_config(directory)
    family = format_of_hf(hf_config)
    family.config_from_hf(hf_config)  # architecture check before reading any weights
    return family.load(hf_config, read_weights(directory), directory, **config_overrides)


def save_hf_checkpoint(directory: str, config, params: Params, *,
                       spiece_model: str | None = None, extra_ids: int = 100, generation: dict | None = None) -> None:
    """Writes `config` + `params` as a HF directory of the config's family (float32 safetensors unless
    params are bf16).

    With `spiece_model` (the run's vocabulary: a SentencePiece model, or a byte-level BPE tokenizer), the
    tokenizer files are written too (see the family's `save_tokenizer`). Every file
    is first written to a staging directory beside `directory` and moved into place only when all were
    written, so a failure (a bad vocabulary, a full disk) leaves `directory` as it was.

    Args:
      directory: created if needed; existing files of the same names are replaced.
      config: the model config (written as `config.json`, see `config_to_hf`).
      params: the model's parameters, boxed or not, either layout.
      spiece_model: path of the vocabulary, or None for no tokenizer files.
      extra_ids: the number of sentinel ids of the tokenizer.
      generation: HF `GenerationConfig` fields in pipeline ids (`DecodeSettings.generation_fields`) for
        `generation_config.json`, beside the family's own (its ids); None for the family's own only.

    Raises:
      CheckpointError: `params` do not match `config`, or `spiece_model` does not exist.
    """
    import shutil
    import tempfile

    from safetensors.numpy import save_file

    family = format_of(config)
    state_dict = family.params_to_state_dict(params, config)
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
            family.save_tokenizer(spiece_model, staging, extra_ids)
        save_file(state_dict, os.path.join(staging, SAFETENSORS_NAME), metadata={"format": "pt"})
        extra = family.extra_files(config)
        if generation:
            extra.setdefault("generation_config.json", {}).update(family.generation_to_hf(config, generation))
        for name, content in extra.items():
            with open(os.path.join(staging, name), "w") as f:
                json.dump(content, f, indent=2, sort_keys=True)
        hf_config = family.config_to_hf(config)
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
