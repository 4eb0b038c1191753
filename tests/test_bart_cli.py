"""BART end to end from the command line on 2 CPU cores: a byte-level BPE tokenizer trained on the corpus, a
teacher pretrained from scratch by BART's denoising (mode=pretrain), MiniEnD-E into a student copied from
its layers, finetuning on SAMSum with ROUGE, and the exported student loaded by transformers. Also the
cross-family rules that are refused before any work."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from miniend_jax.errors import ConfigError
from tests.conftest import ROOT, SPIECE, assert_close_to_float64, config_with

LOG_512 = float(np.log(512))


def _run(config, workdir, *overrides, timeout=300):
    result = subprocess.run([sys.executable, "-m", "miniend_jax.main", f"--config={config}", f"--workdir={workdir}",
                             *overrides], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{stage: workdir} after the tokenizer, the teacher, the distillation and the finetuning ran."""
    from miniend_jax.checkpoints.bpe import corpus_lines, train_bpe
    root = tmp_path_factory.mktemp("bart_cli")
    vocab = train_bpe(corpus_lines("../shared/data/enwiki_2015_extract/AA/wiki_0*.gz")[:3000], 512,
                      str(root / "bpe"))
    stages = {name: str(root / name) for name in ("teacher", "student", "finetuned")}
    common = [f"--config.data.vocab={vocab}"]
    _run("tests/configs/tiny_bart.py:teacher", stages["teacher"], *common)
    _run("tests/configs/tiny_bart.py", stages["student"], *common, f"--config.teacher.path={stages['teacher']}",
         "--config.export.at_end=True")
    _run("tests/configs/tiny_bart_finetune.py", stages["finetuned"], *common,
         f"--config.model.path={stages['student']}")
    return {"vocab": vocab, **stages}


def test_denoising_pretraining_learns(runs):
    from miniend_jax.checkpoints.state import read_meta
    evals = [row["eval/ground_truth"] for row in _rows(runs["teacher"]) if "eval/ground_truth" in row]
    assert evals[-1] < LOG_512 - 0.5          # random init predicts uniformly: ln(512) = 6.24
    assert read_meta(runs["teacher"])["family"] == "bart"


def test_miniend_e_distillation_lowers_every_term(runs):
    from miniend_jax.checkpoints.state import read_meta
    rows = [row for row in _rows(runs["student"]) if "loss" in row]
    for term in ("logit", "encoder_self", "decoder_self"):
        first, last = rows[0][f"loss/{term}"], rows[-1][f"loss/{term}"]
        assert 0 < last < first, (term, first, last)
    meta = read_meta(runs["student"])
    assert meta["family"] == "bart" and meta["model"]["num_encoder_layers"] == 1


def test_finetuned_student_is_scored_with_rouge_and_loads_in_transformers(runs):
    import transformers
    results = json.load(open(os.path.join(runs["finetuned"], "results.json")))
    scores = results["results"]["summ_samsum"]
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(scores)
    losses = [row["loss"] for row in _rows(runs["finetuned"]) if "loss" in row]
    assert losses[-1] < losses[0]
    best = os.path.join(runs["finetuned"], "best")
    model = transformers.BartForConditionalGeneration.from_pretrained(best)
    assert model.config.encoder_layers == 1 and model.config.pad_token_id == 1
    generation = json.load(open(os.path.join(best, "generation_config.json")))   # as it was scored, HF ids
    assert {k: generation[k] for k in ("num_beams", "length_penalty", "early_stopping", "no_repeat_ngram_size",
                                       "forced_bos_token_id", "forced_eos_token_id")} == {
        "num_beams": 2, "length_penalty": 2.0, "early_stopping": True, "no_repeat_ngram_size": 3,
        "forced_bos_token_id": 0, "forced_eos_token_id": 2}
    tokenizer = transformers.AutoTokenizer.from_pretrained(best)
    text = "Boris forgot the shopping list."
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_exported_student_matches_in_pytorch(runs):
    import torch
    import transformers
    from miniend_jax.checkpoints.hf import load_hf_checkpoint
    from miniend_jax.models import module
    config, params = load_hf_checkpoint(os.path.join(runs["student"], "hf_student"))
    generation = json.load(open(os.path.join(runs["student"], "hf_student", "generation_config.json")))
    assert (generation["no_repeat_ngram_size"], generation["forced_bos_token_id"]) == (3, 0)   # BART's, HF ids
    model = transformers.BartForConditionalGeneration.from_pretrained(os.path.join(runs["student"], "hf_student"))
    rng = np.random.default_rng(0)
    enc = np.concatenate([np.zeros((2, 1), int), rng.integers(4, 511, (2, 10)), np.full((2, 1), 2)], 1)
    dec = np.concatenate([np.full((2, 1), 2), np.zeros((2, 1), int), rng.integers(4, 511, (2, 5))], 1)
    with torch.no_grad():
        logits = lambda m: m.eval()(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec)).logits.numpy()
        theirs, reference64 = logits(model), logits(copy.deepcopy(model).double())
    swap = lambda x: np.where(x == 0, 1, np.where(x == 1, 0, x))
    ours_dec = swap(dec)
    ours_dec[:, 0] = 0
    ours = np.asarray(module(config).apply({"params": params}, swap(enc), ours_dec).logits)[..., swap(np.arange(512))]
    assert_close_to_float64(ours, reference64, theirs)


@pytest.mark.parametrize("changes,message", [
    # Copying layers needs one family: a BART student cannot take a T5 teacher's tensors.
    ({"teacher.source": "preset", "teacher.preset": "t5-v1_1-small",
      "teacher.overrides": {"vocab_size": 512, "d_model": 64, "num_heads": 4, "d_kv": 16, "d_ff": 128,
                            "num_encoder_layers": 2, "num_decoder_layers": 2}},
     "teacher is a t5 model and the student a bart one"),
    # Relations across families are defined, the logits too, but only over one vocabulary.
    ({"teacher.source": "preset", "teacher.preset": "t5-v1_1-small", "student.init": "random",
      "teacher.overrides": {"d_model": 64, "num_heads": 4, "d_kv": 16, "d_ff": 128, "num_encoder_layers": 2,
                            "num_decoder_layers": 2}},
     "distillation needs one vocabulary"),
    ({"data.objective": "infilling"}, "data.objective='infilling'"),
    # T5's span corruption needs sentinel ids at the top of the vocabulary, which BPE has not.
    ({"data.objective": "span_corruption"}, "span corruption needs T5's sentinel ids"),
    # A BART model with T5's SentencePiece vocabulary: other EOS and pad ids.
    ({"data.vocab": str(SPIECE)}, "does not belong to the student, a bart model"),
    # Learned positions end at max_position_embeddings (64 here).
    ({"data.inputs_length": 128}, "data.inputs_length=128: the student has positions for 64 tokens"),
    ({"student.preset": "bart-base", "student.overrides": {"d_kv": 16}}, "not a field of a bart model config"),
])
def test_bad_bart_configs_fail_before_work(runs, tmp_path, changes, message):
    from miniend_jax.modes import run
    config = config_with("tiny_bart", **{"data.vocab": runs["vocab"], "teacher.path": runs["teacher"], **changes})
    with pytest.raises(ConfigError, match=message):
        run(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_a_t5_teacher_distils_into_a_bart_student_that_takes_t5s_ids(tmp_path):
    """Across families: a BART-shaped student of a T5 teacher reads the teacher's tokenizer (T5's ids: EOS 1,
    decoder start 0, no pad swap), and every MiniEnD-D term is defined and falls."""
    from miniend_jax.checkpoints.state import read_meta
    from miniend_jax.modes import run
    config = config_with("tiny", **{"train.steps": 12, "train.log_every": 2, "train.checkpoint_every": 12})
    config.student.preset = "bart-base"
    config.student.overrides = dict(vocab_size=32128, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=1,
                                    num_decoder_layers=1, max_position_embeddings=64, dropout_rate=0.0,
                                    eos_token_id=1, decoder_start_token_id=0, hf_pad_token_id=0, bos_token_id=0)
    run(config, str(tmp_path))
    rows = [row for row in _rows(str(tmp_path)) if "loss" in row]
    for term in ("logit", "decoder_self", "cross"):
        assert rows[-1][f"loss/{term}"] < rows[0][f"loss/{term}"], term
    assert read_meta(str(tmp_path))["family"] == "bart"
