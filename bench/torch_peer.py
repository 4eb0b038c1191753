"""The PyTorch peer: MiniEnD-E written the way one would without this project.

`transformers` T5 for teacher and student, forward hooks on the last layer's self-attention `q`, `k`, `v`
projections of each stack, the relation and logit KL in eager PyTorch, AdamW with clipping. The
objective is the project's `miniend_e` term for term: logit KD (T=1) + decoder self-attention relations
+ encoder self-attention relations, each relation the mean of the QQ, KK and VV KLs over R relation
heads, each term a mean over valid rows; AdamW without decay on layer norms, global-norm clip.

Run by bench/distill_step.py (which writes the checkpoints and batch this reads); prints one JSON line.
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from miniend_jax import rss

MASK_VALUE = -1e9


class QKVTaps:
    """Captures the outputs of the last layer's self-attention q/k/v projections of both stacks."""

    def __init__(self, model):
        self.outputs = {}
        for stack in ("encoder", "decoder"):
            attention = getattr(model, stack).block[-1].layer[0].SelfAttention
            for name in ("q", "k", "v"):
                getattr(attention, name).register_forward_hook(self._hook(stack, name))

    def _hook(self, stack, name):
        def hook(module, inputs, output):
            self.outputs[(stack, name)] = output
        return hook


def relation_log_probs(x, mask, heads):
    """log softmax(A A^T / sqrt(d_r)) per relation head; x `[b, L, w]`, mask `[b, 1, L, L]` bool."""
    b, length, width = x.shape
    a = x.view(b, length, heads, width // heads).transpose(1, 2)
    scores = a @ a.transpose(-1, -2) / math.sqrt(width // heads)
    return F.log_softmax(scores.masked_fill(~mask, MASK_VALUE), dim=-1)


def relation_kl(teacher, student, mask, valid, heads):
    t = relation_log_probs(teacher, mask, heads)
    s = relation_log_probs(student, mask, heads)
    per_key = torch.where(mask, t.exp() * (t - s), torch.zeros((), dtype=s.dtype))
    per_row = per_key.sum(-1)                                           # [b, R, L]
    return (per_row * valid[:, None, :]).sum() / heads / valid.sum()


def self_attention_loss(teacher_taps, student_taps, stack, mask, valid, heads):
    return sum(relation_kl(teacher_taps.outputs[(stack, n)], student_taps.outputs[(stack, n)], mask, valid, heads)
               for n in ("q", "k", "v")) / 3.0


def miniend_e_loss(teacher, student, teacher_taps, student_taps, batch, heads):
    enc, dec_in, target = batch["encoder_input_tokens"], batch["decoder_input_tokens"], batch["decoder_target_tokens"]
    enc_valid, dec_valid = enc > 0, target > 0
    with torch.no_grad():
        t_logits = teacher(input_ids=enc, attention_mask=enc_valid.long(), decoder_input_ids=dec_in,
                           decoder_attention_mask=dec_valid.long()).logits
    s_logits = student(input_ids=enc, attention_mask=enc_valid.long(), decoder_input_ids=dec_in,
                       decoder_attention_mask=dec_valid.long()).logits
    t_logp, s_logp = F.log_softmax(t_logits, -1), F.log_softmax(s_logits, -1)
    logit = ((t_logp.exp() * (t_logp - s_logp)).sum(-1) * dec_valid).sum() / dec_valid.sum()
    length = dec_in.shape[1]
    enc_mask = enc_valid[:, None, None, :]
    dec_mask = torch.tril(torch.ones(length, length, dtype=torch.bool))[None, None] & dec_valid[:, None, None, :]
    encoder_self = self_attention_loss(teacher_taps, student_taps, "encoder", enc_mask, enc_valid.float(), heads)
    decoder_self = self_attention_loss(teacher_taps, student_taps, "decoder", dec_mask, dec_valid.float(), heads)
    return logit + decoder_self + encoder_self


def make_optimizer(model, lr, weight_decay):
    decay = [p for n, p in model.named_parameters() if "layer_norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if "layer_norm" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999), eps=1e-6)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--relation_heads", type=int, default=32)
    parser.add_argument("--float64", action="store_true",
                        help="run both models in float64: the reference the float32 losses are tested against")
    args = parser.parse_args()
    teacher = transformers.T5ForConditionalGeneration.from_pretrained(f"{args.dir}/teacher").eval()
    student = transformers.T5ForConditionalGeneration.from_pretrained(f"{args.dir}/student").train()
    if args.float64:
        teacher, student = teacher.double(), student.double()
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher_taps, student_taps = QKVTaps(teacher), QKVTaps(student)
    optimizer = make_optimizer(student, lr=3e-4, weight_decay=0.01)
    batch = {k: torch.from_numpy(v).long() for k, v in np.load(f"{args.dir}/batch.npz").items()}

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = miniend_e_loss(teacher, student, teacher_taps, student_taps, batch, args.relation_heads)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        optimizer.step()
        return float(loss)

    first_loss = step()
    for _ in range(args.warmup - 1):
        step()
    rss.reset_peak()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"framework": "pytorch", "first_loss": first_loss, "seconds_per_step": seconds,
                      "peak_rss_bytes": rss.peak_bytes(), "threads": torch.get_num_threads(),
                      "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"}))


if __name__ == "__main__":
    main()
