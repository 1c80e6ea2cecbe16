"""Training: turning processed data into model inputs, the two-stage curriculum on transformers' Trainer,
checkpoints that survive crashes, and resuming them."""
