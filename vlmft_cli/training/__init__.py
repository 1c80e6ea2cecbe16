"""Training: the two-stage curriculum on transformers' Trainer, checkpoints that survive crashes, and
resuming them. Model inputs come from `vlmft_cli.pipeline`, shared with evaluation and the benchmarks."""
