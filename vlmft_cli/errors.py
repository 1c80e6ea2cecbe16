"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class VlmftError(Exception):
    """A problem with the user's input or environment, worth one clear line (no traceback)."""

    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(VlmftError):
    """A setting, profile or config file is invalid; the message names the key and its source."""


class PluginError(VlmftError):
    """A plugin is unknown, broken, unavailable or registered twice."""


class DataError(VlmftError):
    """Input data is missing or malformed; the message names the file (and line)."""


class CheckpointError(VlmftError):
    """A checkpoint or run cannot be found, is incomplete or is corrupt."""


class VlmftWarning(UserWarning):
    """Something worth a line on stderr that does not stop the command (a misspelt `VLMFT_*` variable, an
    unknown `VLMFT_LOAD_PLUGINS` name). Issued with `warnings.warn`; the CLI prints each once as
    `Warning: …`, library callers see ordinary Python warnings."""
