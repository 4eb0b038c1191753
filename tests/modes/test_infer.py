"""mode=infer: a HF checkpoint decodes a file of inputs and a Task's split into JSONL; predictions and
hypothesis scores equal PyTorch `transformers` `generate` on the same tokens (greedy and HF-rule beams,
with a padded last batch) or a plain t5x beam search (T5-rule beams, the default), and bad input stops with an error naming the field and the fix."""

import json
import os

import numpy as np
import pytest
import sentencepiece
import torch

from miniend_jax.errors import ConfigError
from miniend_jax.modes import run
from tests.conftest import SPIECE, assert_close_to_float64, config_with

LINES = ["The cat sat on the mat.", "translate English to German: That is good.",
         "a somewhat longer input about the weather in the mountains, which changes quickly in spring", "hi",
         "summarize: the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random tiny T5 over T5's vocabulary, saved with `save_pretrained`."""
    import transformers
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
        model.lm_head.weight[1] *= 4.0  # EOS wins at some steps: hypotheses of several lengths
    directory = tmp_path_factory.mktemp("hf_infer")
    model.eval().save_pretrained(directory)
    return model, str(directory)


def _config(directory, **changes):
    base = {"mode": "infer", "model.source": "hf", "model.path": directory, "data.vocab": str(SPIECE),
            "tasks.inputs_length": 16, "tasks.targets_length": 6, "decode.batch_size": 2}
    return config_with("tiny_finetune", **{**base, **changes})


def _generate(model, ids, num_beams, max_new_tokens=6, length_penalty=0.6):
    """(token rows without the start token, scores) from `generate`; greedy scores are the summed
    normalized transition scores up to EOS, beam scores `sequences_scores`."""
    kwargs = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(ids > 0, dtype=torch.long),
                  num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens, min_length=0,
                  length_penalty=length_penalty, early_stopping=False, output_scores=True,
                  return_dict_in_generate=True)
    with torch.no_grad():
        out = model.generate(**kwargs)
    tokens = out.sequences[:, 1:].numpy()
    if num_beams > 1:
        return tokens, out.sequences_scores.numpy()
    transition = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).numpy()
    ends = [list(row).index(1) + 1 if 1 in row else len(row) for row in tokens]
    return tokens, np.array([transition[i, :n].sum() for i, n in enumerate(ends)])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_infer_on_a_text_file_equals_generate(hf_model, num_beams, tmp_path, capsys):
    import copy

    import seqio
    model, directory = hf_model
    (tmp_path / "inputs.txt").write_text("\n".join(LINES) + "\n")
    output = run(_config(directory, **{"infer.input": str(tmp_path / "inputs.txt"), "decode.num_beams": num_beams,
                                       "decode.length_penalty": 0.6, "decode.length_penalty_rule": "hf"}),
                 str(tmp_path / "work"))
    assert output == str(tmp_path / "work" / "predictions.jsonl")
    rows = [json.loads(line) for line in open(output)]
    written = open(output).read()
    with pytest.raises(ConfigError, match=r"predictions.jsonl already holds predictions .* set --config.infer.output"):
        run(_config(directory, **{"infer.input": str(tmp_path / "inputs.txt")}), str(tmp_path / "work"))
    assert open(output).read() == written  # an earlier run's predictions are not replaced
    assert [r["input"] for r in rows] == LINES and [r["index"] for r in rows] == list(range(len(LINES)))

    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPIECE))
    ids = np.zeros((len(LINES), 16), np.int64)
    for n, line in enumerate(LINES):
        row = sp.encode(line)[:15] + [1]  # cut to the inputs length, EOS kept
        ids[n, :len(row)] = row
    tokens, peer = _generate(model, ids, num_beams)
    _, reference = _generate(copy.deepcopy(model).double(), ids, num_beams)
    vocab = seqio.SentencePieceVocabulary(str(SPIECE))
    until_eos = lambda row: list(row)[: list(row).index(1)] if 1 in row else list(row)
    assert [r["prediction"] for r in rows] == [vocab.decode(until_eos(t)) for t in tokens]
    assert len({len(until_eos(t)) for t in tokens}) > 1, "the fixture should end hypotheses at several lengths"
    assert_close_to_float64([r["score"] for r in rows], reference, peer, err_msg="hypothesis scores")

    # Inputs longer than tasks.inputs_length=16 (with EOS) are cut; each row, stdout and the summary say so.
    lengths = [len(sp.encode(line)) + 1 for line in LINES]
    cut = [n > 16 for n in lengths]
    assert 0 < sum(cut) < len(LINES), "the fixture should hold inputs of both kinds"
    assert [r["input_tokens"] for r in rows] == lengths and [r["truncated"] for r in rows] == cut
    assert f"infer: {sum(cut)} of {len(LINES)} inputs are longer than tasks.inputs_length=16" in capsys.readouterr().out
    with open(output + ".summary.json") as f:
        summary = json.load(f)
    assert {k: summary[k] for k in ("inputs", "truncated", "inputs_length", "longest_input_tokens")} == {
        "inputs": len(LINES), "truncated": sum(cut), "inputs_length": 16, "longest_input_tokens": max(lengths)}


def test_infer_with_beams_follows_t5x_by_default(hf_model, tmp_path):
    """The configs' decoding (`decode.length_penalty_rule="auto"`, which is T5's rule for a checkpoint whose
    generation_config sets no length penalty; alpha 0.6): t5x's hypothesis and beam score, against a plain
    t5x beam search over float64 log-probabilities."""
    import copy

    import seqio

    from tests.evaluation.test_decoding import _next_log_probs64, _t5x_reference, hypothesis_score
    model, directory = hf_model
    (tmp_path / "inputs.txt").write_text("\n".join(LINES) + "\n")
    config = _config(directory, **{"infer.input": str(tmp_path / "inputs.txt"), "decode.num_beams": 3})
    from miniend_jax.build import decode_settings
    settings = decode_settings(config)
    assert (settings.length_penalty_rule, settings.length_penalty) == ("t5", 0.6)
    rows = [json.loads(line) for line in open(run(config, str(tmp_path / "work")))]
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPIECE))
    vocab = seqio.SentencePieceVocabulary(str(SPIECE))
    model64 = copy.deepcopy(model).double()
    for row, line in zip(rows, LINES):
        ids = np.zeros(16, np.int64)
        encoded = sp.encode(line)[:15] + [1]
        ids[:len(encoded)] = encoded
        score, tokens = _t5x_reference(lambda prefixes: _next_log_probs64(model64, ids, prefixes), 3, 6, 0.6)
        tokens = list(tokens)
        assert row["prediction"] == vocab.decode(tokens[: tokens.index(1)] if 1 in tokens else tokens)
        assert_close_to_float64(row["score"], score, hypothesis_score(model, ids, tokens, 0.6, "t5", 6))


def test_infer_on_a_task_split_keeps_task_and_target(hf_model, tmp_path):
    import csv
    model, directory = hf_model
    output = run(_config(directory, **{"infer.input": "glue_sst2", "infer.examples": 5,
                                       "infer.output": str(tmp_path / "out" / "sst2.jsonl")}), str(tmp_path / "w"))
    rows = [json.loads(line) for line in open(output)]
    assert output == str(tmp_path / "out" / "sst2.jsonl") and len(rows) == 5
    with open(SPIECE.parents[1] / "glue" / "SST-2" / "dev.tsv", encoding="utf-8") as f:
        dev = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:5]
    assert [r["input"] for r in rows] == [f"sst2 sentence: {d['sentence']}" for d in dev]
    assert [r["target"] for r in rows] == [("negative", "positive")[int(d["label"])] for d in dev]
    assert all(r["task"] == "glue_sst2" and np.isfinite(r["score"]) for r in rows)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPIECE))
    lengths = [len(sp.encode(r["input"])) + 1 for r in rows]
    assert [r["input_tokens"] for r in rows] == lengths and [r["truncated"] for r in rows] == [n > 16 for n in lengths]
    assert any(n > 16 for n in lengths)
    with open(output + ".summary.json") as f:
        assert json.load(f)["truncated"] == sum(n > 16 for n in lengths)


@pytest.mark.parametrize("changes,message", [
    ({"infer.input": ""}, r"infer.input='': give a file"),
    ({"infer.input": "/nonexistent/inputs.jsonl"}, r"no such file"),
    ({"infer.input": "glue_nope"}, r"infer.input='glue_nope' is not a registered Task or Mixture"),
    ({"infer.field": "text"}, r"line 1 has no string field 'text' \(found \['inputs'\]\); set infer.field"),
    ({"decode.num_beams": 0}, r"decode.num_beams"),
    ({"data.on_bad_input": "ignore"}, r"data.on_bad_input='ignore': use 'skip'"),
    ({"decode.length_penalty_rule": "t5x"}, r"decode.length_penalty_rule='t5x': use 't5' .*'hf' .* or 'auto'"),
])
def test_bad_infer_input_stops_before_loading(hf_model, changes, message, tmp_path):
    (tmp_path / "inputs.jsonl").write_text(json.dumps({"inputs": "hello"}) + "\n")
    changes = {"infer.input": str(tmp_path / "inputs.jsonl"), **changes}
    with pytest.raises(ConfigError, match=message):
        run(_config(hf_model[1], **changes), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "predictions.jsonl")


def test_an_input_line_of_invalid_utf8_is_named_before_loading(hf_model, tmp_path):
    """Each output line answers one input line, so a damaged line stops the run, named by file and line
    (not a UnicodeDecodeError traceback)."""
    path = tmp_path / "inputs.txt"
    path.write_bytes(b"hello\nbad \xff byte\n")
    with pytest.raises(ConfigError, match=r"inputs.txt line 2 is not valid UTF-8 \(byte 5\); save the file as UTF-8"):
        run(_config(hf_model[1], **{"infer.input": str(path)}), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "predictions.jsonl")


def test_auto_decodes_as_the_checkpoints_generation_config_asks(tmp_path):
    """`decode.length_penalty_rule="auto"`: HF's rule and alpha where a HF checkpoint's generation_config
    sets a length penalty (as `generate` would decode it), T5's rule and `decode.length_penalty` otherwise;
    an explicit rule is kept."""
    from miniend_jax.build import decode_settings
    rule = lambda settings: (settings.length_penalty_rule, settings.length_penalty)
    assert rule(decode_settings(_config(str(tmp_path)))) == ("t5", 0.6)
    (tmp_path / "generation_config.json").write_text(json.dumps({"decoder_start_token_id": 0, "eos_token_id": 1}))
    assert rule(decode_settings(_config(str(tmp_path)))) == ("t5", 0.6)
    (tmp_path / "generation_config.json").write_text(json.dumps({"length_penalty": 2.0, "num_beams": 4}))
    assert rule(decode_settings(_config(str(tmp_path)))) == ("hf", 2.0)
    assert rule(decode_settings(_config(str(tmp_path), **{"decode.length_penalty_rule": "t5"}))) == ("t5", 0.6)
    assert rule(decode_settings(_config(str(tmp_path), **{"model.source": "preset"}))) == ("t5", 0.6)


def test_infer_on_glue_test_splits_feeds_the_submission(hf_model, tmp_path):
    """`infer.input=glue_submission` with split `test` decodes every GLUE test set of the GLUE folder (AX
    included): rows carry task, split, TFDS's idx and T5's input and target; the lines, with label texts as
    predictions, make the eleven submission files."""
    from miniend_jax.glue_submission import write_submission
    from tests.tasks.test_glue import TEST_SPLITS, t5_test_examples, write_test_files
    counts = write_test_files(tmp_path / "glue")
    output = run(_config(hf_model[1], **{"infer.input": "glue_submission", "tasks.eval_split": "test",
                                         "tasks.glue_dir": str(tmp_path / "glue")}), str(tmp_path / "w"))
    rows = [json.loads(line) for line in open(output)]
    assert len(rows) == sum(counts.values()) and all(r["split"] == "test" for r in rows)
    for config, (task, _) in TEST_SPLITS.items():
        ours = [{"inputs": r["input"], "targets": r["target"], "idx": r["idx"]} for r in rows
                if r["task"] == f"glue_{task}"]
        assert ours == t5_test_examples(tmp_path / "glue", config), config
    with open(output, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "prediction": "2.2" if r["task"] == "glue_stsb" else
                                "neutral" if r["task"].startswith(("glue_mnli", "glue_ax")) else
                                "not_entailment" if r["task"] in ("glue_rte", "glue_qnli") else
                                {"glue_cola": "acceptable", "glue_sst2": "positive", "glue_mrpc": "equivalent",
                                 "glue_qqp": "duplicate", "glue_wnli": "entailment"}[r["task"]]}) + "\n")
    written = write_submission([output], str(tmp_path / "submission"), glue_dir=str(tmp_path / "glue"))
    assert sum(written.values()) == len(rows) and len(written) == 11
