"""Shared fixtures: seeded random PyTorch `transformers` T5 models saved with `save_pretrained`."""

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
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
