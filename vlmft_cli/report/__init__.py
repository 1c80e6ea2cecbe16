"""`vlmft report`: plots and a markdown summary of one or more runs (a stage-1 → stage-2 chain on one axis)."""
