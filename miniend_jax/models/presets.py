"""Named T5 shapes: the public checkpoints' architectures and the paper's student.

Shapes match the published HF configs (`config.json`) of each checkpoint family. umT5 is not listed:
it has a relative-position bias per layer, which this model does not implement. `models/registry.py`
builds configs from these (`get_preset`), together with the other families' presets.
"""

from __future__ import annotations

_T5_V1_0 = dict(vocab_size=32128, feed_forward_proj="relu", tie_word_embeddings=True,
                scale_decoder_outputs=True)
_T5_V1_1 = dict(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                scale_decoder_outputs=False)
_MT5 = dict(_T5_V1_1, vocab_size=250112)


def _shape(d_model, d_ff, num_heads, layers, d_kv=64):
    return dict(d_model=d_model, d_ff=d_ff, num_heads=num_heads, d_kv=d_kv,
                num_encoder_layers=layers, num_decoder_layers=layers)


_V1_1_SHAPES = {
    "small": _shape(512, 1024, 6, 8),
    "base": _shape(768, 2048, 12, 12),
    "large": _shape(1024, 2816, 16, 24),
    "xl": _shape(2048, 5120, 32, 24),
    "xxl": _shape(4096, 10240, 64, 24),
}

PRESETS: dict[str, dict] = {
    "t5-small": dict(_T5_V1_0, **_shape(512, 2048, 8, 6)),
    "t5-base": dict(_T5_V1_0, **_shape(768, 3072, 12, 12)),
    "t5-large": dict(_T5_V1_0, **_shape(1024, 4096, 16, 24)),
    "t5-3b": dict(_T5_V1_0, **_shape(1024, 16384, 32, 24, d_kv=128)),
    "t5-11b": dict(_T5_V1_0, **_shape(1024, 65536, 128, 24, d_kv=128)),
    **{f"t5-v1_1-{size}": dict(_T5_V1_1, **shape) for size, shape in _V1_1_SHAPES.items()},
    **{f"flan-t5-{size}": dict(_T5_V1_1, **shape) for size, shape in _V1_1_SHAPES.items()},
    **{f"mt5-{size}": dict(_MT5, **shape) for size, shape in _V1_1_SHAPES.items()},
    # The paper's "T5 6L;384H" student: 6+6 layers, hidden 384, attention inner width 384.
    # Head split (6 heads of 64, T5's d_kv) is our choice; the paper gives only the widths.
    "miniend-6l-384h": dict(_T5_V1_0, **_shape(384, 1536, 6, 6)),                # ReLU FFN 1536
    "miniend-6l-384h-gated": dict(_T5_V1_1, **_shape(384, 1024, 6, 6)),          # gated FFN 1024
}
