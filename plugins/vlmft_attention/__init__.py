"""vlmft's built-in attention backends: sdpa, eager and flash-attn-sm121, one module each."""
