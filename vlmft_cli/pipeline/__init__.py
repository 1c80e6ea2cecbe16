"""The input pipeline training, evaluation and the benchmarks share: processed JSONL → examples → dataset →
encode → collate.

- `splits`: one split's JSONL read and validated, with the length policy applied (`load_split`)
- `examples`: processed samples → examples (turns, frames to load, the length policy) held as a compact
  `ExampleTable`; `frames` picks them
- `length_cache`: a split's examples and counts cached under `home`, keyed by data and settings
- `dataset`: a map-style dataset that reads and encodes an example when it is fetched, and the collator
- `sampling`: the seeded, length-grouped order of unpacked training and its padding share
- `packing` and `packed_dataset`: stage-1 shared-prefix packing: the batch plan, and its torch side

Nothing here depends on the training package (training, `evaluate` and `bench` depend on this one).
"""
