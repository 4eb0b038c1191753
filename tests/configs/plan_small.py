"""A distillation step large enough that its memory is measurable on a CPU (tests/modes/test_plan.py)."""

from tests.configs import tiny


def get_config():
    c = tiny.get_config()
    c.teacher.overrides.update(dict(vocab_size=8192, d_model=256, num_heads=4, d_kv=64, d_ff=1024,
                                    num_encoder_layers=4, num_decoder_layers=4))
    c.student.overrides.update(dict(vocab_size=8192, d_model=128, num_heads=4, d_kv=32, d_ff=512,
                                    num_encoder_layers=2, num_decoder_layers=2))
    c.distill.relation_heads = 8
    c.data.inputs_length = 128
    c.train.batch_size = 32
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    # An 8192-id vocabulary needs a tokenizer of its own, which a plan (shapes only) does not read; T5's
    # 32100-id one would be refused for these models, as a run would refuse it.
    c.data.vocab = ""
    return c
