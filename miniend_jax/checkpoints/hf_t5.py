"""HF `transformers` T5 checkpoints: `config.json` <-> `T5Config`, and tensor names and layouts.

The T5 family's own checkpoint module (`checkpoints/hf.py` reads and writes the files and dispatches here by
`model_type`). Parameter layout: HF `nn.Linear.weight` is `[out, in]`; our kernels are `[in, out]`, so
projections are transposed both ways. Embedding and relative-position tables keep their layout.
"""

from __future__ import annotations

from typing import Any, Iterator

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from miniend_jax.errors import CheckpointError, ConfigError
from miniend_jax.models.config import T5Config
from miniend_jax.models.registry import abstract_params, to_layout, unstack_layers

MODEL_TYPES = ("t5", "mt5")
ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")
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
    if model_type not in MODEL_TYPES or (architectures and not set(architectures) & set(ARCHITECTURES)):
        raise CheckpointError(
            f"config.json describes model_type={model_type!r}, architectures={architectures}; the T5 reader "
            "loads model_type 't5' or 'mt5' (T5ForConditionalGeneration).")
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
    return to_layout(traverse_util.unflatten_dict(flat), config)


def params_to_state_dict(params: Params, config: T5Config) -> dict[str, np.ndarray]:
    """Our params (boxed or not, either layout, any device) -> HF-named numpy tensors, contiguous.

    Returns:
      {HF name: numpy array in HF layout}, in the parameters' own dtype.

    Raises:
      CheckpointError: a parameter `config` implies is missing.
    """
    flat = traverse_util.flatten_dict(unstack_layers(nn.unbox(params)))
    out = {}
    for hf_name, path, transpose in parameter_names(config):
        if path not in flat:
            raise CheckpointError(f"params lack {'/'.join(path)}; they do not belong to this config.")
        value = np.asarray(flat[path])
        out[hf_name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def load(hf_config: dict, weights: dict[str, np.ndarray], directory: str, **overrides) -> tuple[T5Config, Params]:
    """`(config, numpy params)` of a T5 checkpoint from its parsed `config.json` and tensors.

    Some published checkpoints carry the embedding only under its per-stack aliases (transformers ties
    those to `shared` on load); the head is untied only where an `lm_head.weight` differs from `shared`.

    Raises:
      CheckpointError: weights and config do not belong together, or the overrides are invalid.
      ConfigError: the resulting config is invalid.
    """
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
        config = config_from_hf(hf_config, has_separate_lm_head=separate_head, **overrides)
    except ConfigError as e:
        raise CheckpointError(f"{directory}/config.json: {e}") from None
    return config, state_dict_to_params(weights, config)


def save_tokenizer(vocab: str, directory: str, extra_ids: int) -> None:
    """Writes the HF tokenizer files of the SentencePiece model `vocab` into `directory`.

    Raises:
      CheckpointError: `vocab` does not exist.
    """
    from miniend_jax.checkpoints.tokenizer import save_hf_tokenizer
    save_hf_tokenizer(vocab, directory, extra_ids=extra_ids)


def extra_files(config: T5Config) -> dict[str, dict]:
    """No files beyond `config.json` and the weights."""
    return {}


# HF GenerationConfig fields that decoding reads (`build.decode_settings`).
GENERATION_FIELDS = ("min_length", "no_repeat_ngram_size", "length_penalty", "early_stopping",
                     "forced_bos_token_id", "forced_eos_token_id")


def generation_to_hf(config: T5Config, fields: dict) -> dict:
    """`GenerationConfig` fields in pipeline ids -> HF ids (T5's are the same)."""
    del config
    return dict(fields)


def generation_settings(hf_config: dict, generation_config: dict | None) -> dict:
    """The decoding settings of a T5 checkpoint's `generation_config.json` (T5's ids are the pipeline's);
    `config.json` is not read for them (T5 checkpoints keep none there)."""
    del hf_config
    return {name: generation_config[name] for name in GENERATION_FIELDS
            if generation_config and generation_config.get(name) is not None}
