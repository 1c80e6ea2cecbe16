"""vlmft's built-in InternVL3 model backend (entry point `vlmft.models: internvl3`)."""

from vlmft_internvl3.backend import InternVL3Backend

__all__ = ["InternVL3Backend"]
