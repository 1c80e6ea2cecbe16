"""Operations on finished training checkpoints: list, verify, merge, export and prune.

Each job lives in its own module and is imported directly (`vlmft_cli.ckpt.verify`, …); none of them
imports torch or transformers at module level, so `vlmft --help` stays fast. Runs and checkpoints are
always found through `vlmft_cli.runs`.
"""
