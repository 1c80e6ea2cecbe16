"""Benchmarks behind `vlmft bench`: attention kernels, training steps, the dataloader, extraction and stage-1
packing, each written as a JSON document (`results`) that `compare` can set against another run's.

Modules: `timing` (warm-up, repeats, medians), `device` (which device, and what it is), `memory` (peak
memory of a region), `matmul` (a matmul peak measured in the same run), `architecture` (real architectures
and head layouts through the model backends), `attention`, `step` (with `random_init`, `samples`,
`flops` and `projection`), `data`, `extract`, `packing`, `results`, `compare` and `tables` (rows for the CLI's tables).
The inputs come from `vlmft_cli.pipeline`, as in training; nothing here depends on the training package.
"""
