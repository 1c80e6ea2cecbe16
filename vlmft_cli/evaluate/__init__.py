"""Evaluating a checkpoint (or the base model) on a processed split, as RoboVQA does.

- `scoring`: sacrebleu BLEU-1..4 (corpus and sentence), exact match and yes/no accuracy (pure functions)
- `prompts`: the questions to generate answers for, each with its true conversation history
- `loss`: teacher-forced answer-token loss and perplexity (also training's evaluation)
- `generation`: batched greedy generation with left padding
- `target`: what is evaluated (checkpoint or base model), with which settings, written where
- `runner`: `evaluate_checkpoint(request, reporter) -> EvalReport`, the library entry point
- `report_files`: metrics.json, metrics.md and predictions.jsonl, written atomically
- `compare`: several evaluations side by side with Δ% against the first
"""
