"""vlmft's built-in Qwen VL model backends (entry points `vlmft.models: qwen2_5_vl` and `qwen3_vl`)."""

from vlmft_qwen_vl.backend import Qwen3VLBackend, Qwen25VLBackend

__all__ = ["Qwen25VLBackend", "Qwen3VLBackend"]
