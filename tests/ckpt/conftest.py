"""Fixtures for checkpoint tests (defined in `fabricate`, shared with the CLI tests)."""

from ckpt.fabricate import adapter_template, make_run  # noqa: F401 - fixtures
