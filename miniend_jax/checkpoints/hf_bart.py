"""HF `transformers` BART checkpoints: `config.json` <-> `BartConfig`, tensor names, layouts and token ids.

The BART family's own checkpoint module (`checkpoints/hf.py` reads and writes the files and dispatches
here by `model_type`). Names as `modeling_bart.py` writes them.

Layouts read: what transformers 5 writes for `BartForConditionalGeneration` (`model.shared.weight` only,
generation settings in `generation_config.json`), and what transformers 4 and the hub's checkpoints hold:
the embedding also under `model.encoder.embed_tokens.weight` / `model.decoder.embed_tokens.weight` (and
`lm_head.weight`), generation settings inside `config.json`, and `BartModel` checkpoints without the
`model.` prefix and without `final_logits_bias` (read as zeros). The head is always tied (every BART
checkpoint is); a `lm_head.weight` that differs from the token table is refused.

Token ids: rows of the token table and entries of `final_logits_bias` are permuted so that pipeline id 0
is HF's pad id (`hf_to_pipeline`: 0 and the pad id swapped, an involution); the same permutation writes them
back. Projections: HF `nn.Linear.weight` is `[out, in]`, our kernels `[in, out]`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from miniend_jax.errors import CheckpointError, ConfigError
from miniend_jax.models.bart_config import BartConfig
from miniend_jax.models.registry import abstract_params, to_layout, unstack_layers

MODEL_TYPES = ("bart",)
ARCHITECTURES = ("BartForConditionalGeneration", "BartModel")
# HF GenerationConfig fields that decoding reads (`build.decode_settings`), in HF ids.
GENERATION_FIELDS = ("num_beams", "max_length", "min_length", "no_repeat_ngram_size", "length_penalty",
                     "early_stopping", "forced_bos_token_id", "forced_eos_token_id")

Params = dict[str, Any]


def hf_to_pipeline(token_id: int, hf_pad_token_id: int) -> int:
    """A HF token id as the pipeline sees it: 0 and `hf_pad_token_id` swapped (its own inverse)."""
    return {0: hf_pad_token_id, hf_pad_token_id: 0}.get(token_id, token_id)


def _permutation(vocab_size: int, hf_pad_token_id: int) -> np.ndarray:
    """Row `i` of the pipeline's table is row `perm[i]` of HF's (and back: the swap is an involution)."""
    perm = np.arange(vocab_size)
    perm[[0, hf_pad_token_id]] = perm[[hf_pad_token_id, 0]]
    return perm


# ---------------------------------------------------------------------------------------------
# config.json <-> BartConfig
# ---------------------------------------------------------------------------------------------
def _equal_pair(hf: dict, encoder: str, decoder: str) -> int:
    value = hf[encoder]
    if hf.get(decoder, value) != value:
        raise CheckpointError(f"config.json has {encoder}={value} but {decoder}={hf[decoder]}; this BART "
                              "shares one value between encoder and decoder (as every published BART does).")
    return value


def config_from_hf(hf: dict, **overrides) -> BartConfig:
    """A `BartConfig` from the dict of a HF `config.json` (ids moved to the pipeline's, see the module).

    Raises:
      CheckpointError: not a BART config (mBART's pre-layer-norm blocks included), or a field missing.
      ConfigError: the resulting config is invalid.
    """
    model_type, architectures = hf.get("model_type"), hf.get("architectures") or []
    if model_type not in MODEL_TYPES or (architectures and not set(architectures) & set(ARCHITECTURES)):
        raise CheckpointError(f"config.json describes model_type={model_type!r}, architectures={architectures}; the "
                              "BART reader loads model_type 'bart' (BartForConditionalGeneration or BartModel).")
    if hf.get("normalize_before") or hf.get("add_final_layer_norm"):
        raise CheckpointError("config.json asks for pre-layer-norm blocks (normalize_before / add_final_layer_norm), "
                              "which is mBART's architecture, not BART's; it cannot be read as BART.")
    if hf.get("tie_word_embeddings") is False:
        raise CheckpointError("config.json declares an untied head (tie_word_embeddings=false); this BART ties its "
                              "head to the token table, as every published BART does.")
    try:
        pad = hf.get("pad_token_id", 1)
        ids = lambda name, default: hf_to_pipeline(default if hf.get(name) is None else hf[name], pad)
        fields = dict(
            vocab_size=hf["vocab_size"], d_model=hf["d_model"],
            d_ff=_equal_pair(hf, "encoder_ffn_dim", "decoder_ffn_dim"),
            num_heads=_equal_pair(hf, "encoder_attention_heads", "decoder_attention_heads"),
            num_encoder_layers=hf["encoder_layers"], num_decoder_layers=hf["decoder_layers"],
            max_position_embeddings=hf["max_position_embeddings"],
            activation_function=hf.get("activation_function", "gelu"),
            scale_embedding=bool(hf.get("scale_embedding", False)),
            dropout_rate=hf.get("dropout", 0.1), attention_dropout=hf.get("attention_dropout", 0.0),
            activation_dropout=hf.get("activation_dropout", 0.0),
            bos_token_id=ids("bos_token_id", 0), eos_token_id=ids("eos_token_id", 2),
            decoder_start_token_id=ids("decoder_start_token_id", 2), hf_pad_token_id=pad)
    except KeyError as missing:
        raise CheckpointError(f"config.json lacks the field {missing}; it is not a complete BART config. "
                              "Re-save it with transformers' save_pretrained.") from None
    fields.update(overrides)
    return BartConfig(**fields)


def config_to_hf(config: BartConfig) -> dict:
    """The `config.json` dict of `config` (HF ids), readable by transformers 4 and 5."""
    hf_id = lambda token_id: hf_to_pipeline(token_id, config.hf_pad_token_id)
    return {
        "architectures": ["BartForConditionalGeneration"], "model_type": "bart", "is_encoder_decoder": True,
        "vocab_size": config.vocab_size, "d_model": config.d_model,
        "encoder_layers": config.num_encoder_layers, "decoder_layers": config.num_decoder_layers,
        "encoder_attention_heads": config.num_heads, "decoder_attention_heads": config.num_heads,
        "encoder_ffn_dim": config.d_ff, "decoder_ffn_dim": config.d_ff,
        "max_position_embeddings": config.max_position_embeddings,
        "activation_function": config.activation_function, "scale_embedding": config.scale_embedding,
        "dropout": config.dropout_rate, "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout, "init_std": 0.02, "tie_word_embeddings": True,
        "pad_token_id": config.hf_pad_token_id, "bos_token_id": hf_id(config.bos_token_id),
        "eos_token_id": hf_id(config.eos_token_id), "decoder_start_token_id": hf_id(config.decoder_start_token_id),
        "forced_eos_token_id": hf_id(config.eos_token_id), "use_cache": True, "dtype": config.param_dtype,
    }


def extra_files(config: BartConfig) -> dict[str, dict]:
    """`generation_config.json`: the ids and BART's forced EOS (as transformers 5 writes it)."""
    hf = config_to_hf(config)
    return {"generation_config.json": {name: hf[name] for name in (
        "bos_token_id", "decoder_start_token_id", "eos_token_id", "forced_eos_token_id", "pad_token_id")}}


def generation_to_hf(config: BartConfig, fields: dict) -> dict:
    """`GenerationConfig` fields in pipeline ids -> HF ids (the forced tokens swapped back)."""
    return {name: hf_to_pipeline(value, config.hf_pad_token_id) if name.startswith("forced_") else value
            for name, value in fields.items()}


def generation_settings(hf_config: dict, generation_config: dict | None) -> dict:
    """The decoding settings a BART checkpoint asks for, in pipeline ids: `generation_config.json`'s
    fields, else the same fields of `config.json` (transformers 4 kept them there).

    Returns:
      {field of `GENERATION_FIELDS`: value} for the fields either file sets (None values dropped).
    """
    source = generation_config if generation_config is not None else hf_config
    pad = hf_config.get("pad_token_id", 1)
    settings = {name: source[name] for name in GENERATION_FIELDS if source.get(name) is not None}
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        if name in settings:
            settings[name] = hf_to_pipeline(settings[name], pad)
    return settings


# ---------------------------------------------------------------------------------------------
# Parameter names
# ---------------------------------------------------------------------------------------------
def _linear(hf: str, ours: tuple[str, ...]):
    return [(f"{hf}.weight", ours + ("kernel",), True), (f"{hf}.bias", ours + ("bias",), False)]


def _norm(hf: str, ours: tuple[str, ...]):
    return [(f"{hf}.weight", ours + ("scale",), False), (f"{hf}.bias", ours + ("bias",), False)]


def _attention(hf: str, ours: tuple[str, ...]):
    names = []
    for hf_name, our_name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out")):
        names += _linear(f"{hf}.{hf_name}", ours + (our_name,))
    return names


def parameter_names(config: BartConfig) -> list[tuple[str, tuple[str, ...], bool]]:
    """Every (HF name, our parameter path, transpose?) of a model with `config`, unrolled layout."""
    names = [("model.shared.weight", ("token_embedder", "embedding"), False),
             ("final_logits_bias", ("final_logits_bias",), False)]
    for stack, depth in (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers)):
        names.append((f"model.{stack}.embed_positions.weight", (stack, "embed_positions"), False))
        names += _norm(f"model.{stack}.layernorm_embedding", (stack, "layernorm_embedding"))
        for i in range(depth):
            hf, ours = f"model.{stack}.layers.{i}", (stack, f"layers_{i}")
            names += _attention(f"{hf}.self_attn", ours + ("self_attn",))
            names += _norm(f"{hf}.self_attn_layer_norm", ours + ("self_attn_layer_norm",))
            if stack == "decoder":
                names += _attention(f"{hf}.encoder_attn", ours + ("encoder_attn",))
                names += _norm(f"{hf}.encoder_attn_layer_norm", ours + ("encoder_attn_layer_norm",))
            names += _linear(f"{hf}.fc1", ours + ("mlp", "fc1")) + _linear(f"{hf}.fc2", ours + ("mlp", "fc2"))
            names += _norm(f"{hf}.final_layer_norm", ours + ("final_layer_norm",))
    return names


def expected_shapes(config: BartConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every HF tensor of a model with `config` (HF layout; `final_logits_bias` is `[1, vocab]`)."""
    ours = traverse_util.flatten_dict(nn.unbox(abstract_params(config.replace(scan_layers=False))))
    shapes = {}
    for hf_name, path, transpose in parameter_names(config):
        shape = tuple(ours[path].shape)
        shapes[hf_name] = shape[::-1] if transpose else shape
    shapes["final_logits_bias"] = (1, config.vocab_size)
    return shapes


def _normalise_names(weights: dict[str, np.ndarray], config: BartConfig) -> dict[str, np.ndarray]:
    """The checkpoint's tensors under `BartForConditionalGeneration`'s names: `model.` prefixed, the token
    table as `model.shared.weight`, `final_logits_bias` zeros where absent (BartModel)."""
    weights = {(name if name.startswith("model.") or name in ("final_logits_bias", "lm_head.weight")
                else f"model.{name}"): value for name, value in weights.items()}
    aliases = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
    if "model.shared.weight" not in weights:
        for alias in aliases:
            if alias in weights:
                weights["model.shared.weight"] = weights[alias]
                break
    shared = weights.get("model.shared.weight")
    for alias in aliases:
        value = weights.pop(alias, None)
        if value is not None and shared is not None and not np.array_equal(value, shared):
            raise CheckpointError(f"{alias} differs from the token table (model.shared.weight); this BART ties "
                                  "its embeddings and head, so the checkpoint cannot be read as BART.")
    weights.setdefault("final_logits_bias", np.zeros((1, config.vocab_size), np.float32))
    return weights


def state_dict_to_params(state_dict: dict[str, np.ndarray], config: BartConfig) -> Params:
    """HF tensors -> our nested params (numpy, `config.param_dtype`, the layout `config.scan_layers` names),
    every shape checked and the token rows permuted to pipeline ids.

    Raises:
      CheckpointError: a tensor is missing, unexpected, or of the wrong shape.
    """
    state_dict = _normalise_names(dict(state_dict), config)
    shapes = expected_shapes(config)
    missing = [name for name in shapes if name not in state_dict]
    if missing:
        raise CheckpointError(f"the checkpoint lacks {len(missing)} weight(s) its config.json implies, e.g. "
                              f"{missing[:3]}; config.json and the weights do not belong together.")
    unexpected = sorted(set(state_dict) - set(shapes))
    if unexpected:
        raise CheckpointError(f"the checkpoint has {len(unexpected)} weight(s) a BART of this config does not have, "
                              f"e.g. {unexpected[:3]}; check that config.json (layers) matches the weights.")
    dtype = jnp.dtype(config.param_dtype)
    perm = _permutation(config.vocab_size, config.hf_pad_token_id)
    flat = {}
    for hf_name, path, transpose in parameter_names(config):
        value = np.asarray(state_dict[hf_name])
        if tuple(value.shape) != shapes[hf_name]:
            raise CheckpointError(f"weight {hf_name} has shape {tuple(value.shape)} but the config implies "
                                  f"{shapes[hf_name]}; config.json (d_model, heads, ffn_dim, vocab_size, "
                                  "max_position_embeddings) does not match the weights.")
        if hf_name == "final_logits_bias":
            value = value.reshape(-1)[perm]
        elif hf_name == "model.shared.weight":
            value = value[perm]
        flat[path] = (value.T if transpose else value).astype(dtype)
    return to_layout(traverse_util.unflatten_dict(flat), config)


def params_to_state_dict(params: Params, config: BartConfig) -> dict[str, np.ndarray]:
    """Our params (boxed or not, either layout) -> HF-named numpy tensors in HF ids, contiguous.

    Raises:
      CheckpointError: a parameter `config` implies is missing.
    """
    flat = traverse_util.flatten_dict(unstack_layers(nn.unbox(params)))
    perm = _permutation(config.vocab_size, config.hf_pad_token_id)
    out = {}
    for hf_name, path, transpose in parameter_names(config):
        if path not in flat:
            raise CheckpointError(f"params lack {'/'.join(path)}; they do not belong to this config.")
        value = np.asarray(flat[path])
        if hf_name == "final_logits_bias":
            value = value[perm][None]
        elif hf_name == "model.shared.weight":
            value = value[perm]
        out[hf_name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def load(hf_config: dict, weights: dict[str, np.ndarray], directory: str, **overrides) -> tuple[BartConfig, Params]:
    """`(config, numpy params)` of a BART checkpoint from its parsed `config.json` and tensors.

    Raises:
      CheckpointError: weights and config do not belong together, or the overrides are invalid.
    """
    try:
        config = config_from_hf(hf_config, **overrides)
    except ConfigError as e:
        raise CheckpointError(f"{directory}/config.json: {e}") from None
    return config, state_dict_to_params(weights, config)


def save_tokenizer(vocab: str, directory: str, extra_ids: int) -> None:
    """Writes the byte-level BPE tokenizer files of `vocab` (a `tokenizer.json` or a folder holding it or
    `vocab.json` + `merges.txt`) into `directory`.

    Raises:
      CheckpointError: `vocab` is not a byte-level BPE tokenizer.
    """
    del extra_ids  # BART's vocabulary has no sentinels
    from miniend_jax.checkpoints.bpe import save_hf_tokenizer
    save_hf_tokenizer(vocab, directory)


__all__ = ["MODEL_TYPES", "config_from_hf", "config_to_hf", "extra_files", "generation_settings", "parameter_names",
           "expected_shapes", "state_dict_to_params", "params_to_state_dict", "load", "save_tokenizer",
           "hf_to_pipeline"]
