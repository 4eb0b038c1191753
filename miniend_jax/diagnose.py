"""What training changed in a model: how far each group of parameters moved from its initialisation, and how
sharp its attention is on held-out text.

  python -m miniend_jax.diagnose --workdir=workdirs/demo/teacher [--text=FILE] [--examples=64]

Prints a table and writes `<workdir>/diagnosis.json`. A pretraining run that moves the attention
projections by 100% and the embeddings by 3% while its encoder's attention collapses from near-uniform to
a few tokens has learned attention patterns, not words: AdamW at an absolute rate does that to T5's
initialisation (METHOD.md, "Optimizer"); `optim.name=adamw_scaled` or `adafactor` moves every group by a
similar fraction.

- Movement: `||theta - theta_0|| / ||theta_0||` per group (embedding, query, key, value, out, FFN, layer
  norms, position bias, head), `theta_0` the run's own initialisation, rebuilt from its `config.json`: the
  seed's random parameters, the teacher's copied layers (`student.init=teacher_layers`), or the model a
  finetuning run started from.
- Attention entropy: `-sum_k p log p` in nats of each attention distribution, averaged over heads, layers
  and non-padding query positions, at initialisation and after training, with `log(number of keys)` (a
  uniform distribution's) beside it. The text is `--text` (one example per line) or the run's held-out
  corpus file; the encoder reads each line, the decoder the same tokens shifted right.
"""

from __future__ import annotations

import functools
import json
import re
import sys

import numpy as np
from absl import app, flags, logging

from miniend_jax import files
from miniend_jax.errors import ConfigError, MiniEndError

GROUPS = ("embedding", "query", "key", "value", "out", "ffn", "layer_norm", "position_bias", "head")
STACKS = ("encoder_self", "decoder_self", "cross")


def parameter_group(path: tuple[str, ...]) -> str:
    """The group of a parameter path of a model (T5: `("encoder", "layers_0", "attention", "query",
    "kernel")` -> "query"; BART's biases go with their matrices, its position tables with T5's bias)."""
    names = set(path)
    if "token_embedder" in names:
        return "embedding"
    if names & {"logits_dense", "final_logits_bias"}:
        return "head"
    if names & {"relpos_bias", "embed_positions"}:
        return "position_bias"
    if path[-1] == "scale" or (len(path) > 1 and "norm" in path[-2]):
        return "layer_norm"
    if "mlp" in names:
        return "ffn"
    for group in ("query", "key", "value", "out"):
        if group in names:
            return group
    raise ValueError(f"parameter {'/'.join(path)} belongs to no group")


def relative_movement(initial, trained) -> dict[str, float]:
    """`||trained - initial|| / ||initial||` per group (float64), over every parameter of the group.

    Args:
      initial, trained: parameter trees of one layout (nested dicts of arrays).
    """
    import jax
    if jax.tree.structure(initial) != jax.tree.structure(trained):
        raise ValueError("the two parameter trees differ in structure (another layout or model)")
    change, size = dict.fromkeys(GROUPS, 0.0), dict.fromkeys(GROUPS, 0.0)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(initial)[0], jax.tree.leaves(trained)):
        group = parameter_group(tuple(str(getattr(k, "key", k)) for k in path))
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        change[group] += float(np.sum((b - a) ** 2))
        size[group] += float(np.sum(a ** 2))
    return {g: (change[g] / size[g]) ** 0.5 for g in GROUPS if size[g] > 0}


def attention_entropy(model_config, params, encoder_tokens: np.ndarray, decoder_input_tokens: np.ndarray) -> dict:
    """Mean attention entropy in nats per attention kind, over heads, layers and valid query positions,
    and the mean entropy of a uniform distribution over the same keys.

    Args:
      model_config: the model config (any family); params: its parameters (any layout).
      encoder_tokens, decoder_input_tokens: int32 `[batch, length]`, 0 = padding.

    Returns:
      {kind: {"entropy": float, "uniform": float}} for encoder_self, decoder_self and cross.
    """
    import jax
    from miniend_jax.models import Taps, family_of, module
    from miniend_jax.models.registry import unstack_layers
    cfg = model_config
    taps = Taps(encoder_self=tuple(range(cfg.num_encoder_layers)), decoder_self=tuple(range(cfg.num_decoder_layers)),
                cross=tuple(range(cfg.num_decoder_layers)))
    out = jax.jit(lambda p, e, d: module(cfg).apply({"params": p}, e, d, taps=taps))(
        params, encoder_tokens, decoder_input_tokens)
    enc_valid, dec_valid = encoder_tokens > 0, decoder_input_tokens > 0
    dec_valid[:, 0] = True  # the start token (id 0) is a real query position

    terms = functools.partial(family_of(cfg).attention_logits_terms, cfg, unstack_layers(params))
    le, ld = encoder_tokens.shape[1], decoder_input_tokens.shape[1]
    causal = np.tril(np.ones((ld, ld), bool))[None, None]
    cases = {"encoder_self": (terms("encoder_self", le, le), enc_valid[:, None, None, :], enc_valid),
             "decoder_self": (terms("decoder_self", ld, ld), causal & dec_valid[:, None, None, :], dec_valid),
             "cross": (terms("cross", ld, le), enc_valid[:, None, None, :], dec_valid)}
    result = {}
    for kind, ((scale, b), mask, query_valid) in cases.items():
        entropies, uniform = [], []
        for tap in out.taps[kind].values():
            q = np.asarray(tap.q, np.float64).reshape(*tap.q.shape[:2], cfg.num_heads, -1)
            k = np.asarray(tap.k, np.float64).reshape(*tap.k.shape[:2], cfg.num_heads, -1)
            scores = np.where(mask, scale * np.einsum("bqhd,bkhd->bhqk", q, k) + b, -np.inf)
            logp = scores - scores.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
            logp = np.where(mask, logp, 0.0)  # masked keys: p = 0 contributes 0 (not 0 * -inf)
            entropy = -(np.where(mask, np.exp(logp), 0.0) * logp).sum(-1)         # [batch, heads, queries]
            keys = np.broadcast_to(mask, entropy.shape + (mask.shape[-1],)).sum(-1)
            rows = np.broadcast_to(query_valid[:, None, :], entropy.shape)
            entropies.append(entropy[rows].mean())
            uniform.append(np.log(keys[rows]).mean())
        result[kind] = {"entropy": float(np.mean(entropies)), "uniform": float(np.mean(uniform))}
    return result


def _read_config(workdir: str):
    import ml_collections
    path = files.join(workdir, "config.json")
    if not files.isfile(path):
        raise ConfigError(f"--workdir={workdir!r} holds no config.json; point it at a pretrain, distill or "
                          "finetune workdir.")
    try:
        return ml_collections.ConfigDict(json.loads(files.read_text(path)))
    except (ValueError, TypeError, AttributeError) as error:
        raise ConfigError(f"{path} cannot be read ({error}); point --workdir at a complete run.") from None


def initial_params(config, model_config, trained_params):
    """The parameters the run of `config` started from, in `model_config`'s layout."""
    import flax.linen as nn
    import jax
    from miniend_jax import build
    from miniend_jax.models.registry import init_params, to_layout
    if config.mode == "finetune":
        section = config.model
        _, params = build.load_model(section, build.model_config(section, "model"), config.seed)
        return to_layout(params, model_config)
    if config.student.init == "teacher_layers":
        from miniend_jax.distill.student_init import copy_teacher_layers
        teacher, teacher_params = build.load_teacher(config, build.teacher_config(config))
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), trained_params)
        return copy_teacher_layers(teacher_params, teacher, model_config, abstract)
    return jax.tree.map(np.asarray, nn.unbox(init_params(model_config, jax.random.PRNGKey(config.seed))))


def held_out_lines(config, text: str, examples: int) -> list[str]:
    """`examples` non-empty lines of `text`, or of the run's last held-out corpus file (plain text)."""
    if not text:
        from tasks.pretraining import resolve_files, split_files
        corpus = resolve_files(config.data.files) if config.data.get("files") else []
        held_out = split_files(corpus, config.data.validation_files)["validation"] if (
            corpus and config.data.validation_files) else []
        if not held_out or not all(re.search(r"\.(txt|text)$", f) for f in held_out):
            raise ConfigError("the run's held-out corpus is not plain text files; give --text=FILE (one example "
                              "per line).")
        text = held_out[-1]
    if not files.isfile(text):
        raise ConfigError(f"--text={text!r} is not a file; give a text file with one example per line.")
    from tasks import task_files
    read = task_files.read_lines(text)
    damaged = [number for number, _, problem in read if problem is not None]
    if damaged:
        raise ConfigError(f"--text={text!r} line {damaged[0]} is not valid UTF-8; give a UTF-8 text file.")
    lines = [line.strip() for _, line, _ in read if line.strip()]
    if not lines:
        raise ConfigError(f"--text={text!r} holds no text; give a file with one example per line.")
    return lines[:examples]


def tokenize(lines: list[str], vocab: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(encoder tokens, decoder input tokens) `[len(lines), length]`: each line with EOS (a BPE tokenizer's
    lines also open with `<s>`, as BART's), truncated and padded, in pipeline ids; the decoder reads the same
    tokens shifted right after the start token 0."""
    import miniend_jax.checkpoints.bpe as bpe
    if bpe.is_bpe(vocab):
        tokenizer, _ = bpe.load_tokenizer(vocab)
        pad, bos, eos = (tokenizer.token_to_id(t) for t in (bpe.PAD, bpe.BOS, bpe.EOS))
        encode = lambda line: bpe.hf_to_pipeline([bos] + tokenizer.encode(line, add_special_tokens=False).ids + [eos],
                                                 pad)
    else:
        from miniend_jax.checkpoints.tokenizer import sentencepiece_processor
        processor = sentencepiece_processor(vocab)  # a local copy of a cloud file
        encode = lambda line: processor.encode(line) + [processor.eos_id()]
    encoder = np.zeros((len(lines), length), np.int32)
    for i, line in enumerate(lines):
        ids = list(encode(line))[:length]
        encoder[i, :len(ids)] = ids
    decoder = np.concatenate([np.zeros((len(lines), 1), np.int32), encoder[:, :-1]], axis=1)
    return encoder, decoder


def diagnose(workdir: str, text: str = "", examples: int = 64, length: int = 0) -> dict:
    """Movement per parameter group and attention entropy before and after training, for `workdir`.

    Raises:
      ConfigError: no config.json or checkpoint in `workdir`, or no text to measure attention on.
    """
    from miniend_jax import build
    config = _read_config(workdir)
    model_config, trained, meta = build.restore_workdir(workdir)
    lines = held_out_lines(config, text, examples)
    length = length or (config.tasks.inputs_length if config.mode == "finetune" else config.data.inputs_length)
    encoder, decoder = tokenize(lines, config.data.vocab, length)
    initial = initial_params(config, model_config, trained)
    entropy = {"initial": attention_entropy(model_config, initial, encoder, decoder),
               "trained": attention_entropy(model_config, trained, encoder, decoder)}
    return {"workdir": workdir, "step": meta["step"], "optimizer": config.optim.get("name", "adamw"),
            "examples": len(lines), "movement": relative_movement(initial, trained), "attention_entropy": entropy}


def table(report: dict) -> str:
    lines = [f"{report['workdir']} at step {report['step']} ({report['optimizer']}), {report['examples']} examples",
             "", "| parameter group | movement from initialisation |", "|---|---:|"]
    lines += [f"| {group} | {value:.3f} |" for group, value in report["movement"].items()]
    lines += ["", "| attention | entropy at init (nats) | trained | uniform |", "|---|---:|---:|---:|"]
    for kind in STACKS:
        init, trained = report["attention_entropy"]["initial"][kind], report["attention_entropy"]["trained"][kind]
        lines.append(f"| {kind} | {init['entropy']:.2f} | {trained['entropy']:.2f} | {init['uniform']:.2f} |")
    return "\n".join(lines)


flags.DEFINE_string("workdir", None, "A pretrain, distill or finetune workdir.")
flags.DEFINE_string("text", "", "A text file, one example per line (default: the run's held-out corpus file).")
flags.DEFINE_integer("examples", 64, "Lines of text to measure attention on.")
flags.DEFINE_integer("length", 0, "Tokens per example (default: the run's input length).")


def main(argv) -> None:
    del argv
    from miniend_jax.console import quiet_console
    logging.set_verbosity(logging.WARNING)
    quiet_console()
    try:
        report = diagnose(flags.FLAGS.workdir, flags.FLAGS.text, flags.FLAGS.examples, flags.FLAGS.length)
    except MiniEndError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    files.write_json(files.join(flags.FLAGS.workdir, "diagnosis.json"), report, indent=1)
    print(table(report))


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
