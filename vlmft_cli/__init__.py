"""vlmft: fine-tune vision-language models on robot video QA (RoboVQA) through a two-stage curriculum."""

__version__ = "0.1.0"
