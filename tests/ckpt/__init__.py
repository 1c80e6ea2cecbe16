"""Tests of `vlmft_cli.ckpt`: listing, verification, merging, exporting and pruning checkpoints."""
