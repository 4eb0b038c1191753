"""Train state, the jitted distillation/pretraining step, and the training loop."""
