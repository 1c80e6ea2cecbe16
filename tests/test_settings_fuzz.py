"""The config loader never fails with anything but a ConfigError, whatever the file or environment holds."""

import contextlib
import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmft_cli.errors import ConfigError
from vlmft_cli.settings import Settings, resolve_settings

KEYS = st.sampled_from([*Settings.model_fields, "unknown_key", "stage", "profile"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12), st.lists(st.text(max_size=5), max_size=3),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(KEYS, SCALARS, max_size=6))
def test_config_file_values(tmp_path, values):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(values))
    with contextlib.suppress(ConfigError):  # the only failure allowed
        resolve_settings(config_file=path, environ={})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
def test_arbitrary_file_text(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    with contextlib.suppress(ConfigError):  # the only failure allowed
        resolve_settings(config_file=path, environ={})


@settings(max_examples=100, deadline=None)
@given(env=st.dictionaries(st.sampled_from([f"VLMFT_{k.upper()}" for k in Settings.model_fields]), st.text(string.printable, max_size=10), max_size=4))
def test_environment_values(env):
    with contextlib.suppress(ConfigError):  # the only failure allowed
        resolve_settings(environ=env)
