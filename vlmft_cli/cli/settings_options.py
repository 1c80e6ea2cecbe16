"""The command-line form of every setting, generated from the settings model.

Each `Settings` field becomes one Typer option, so `vlmft train --help` cannot drift from the model:

- flag: the field's `flag` metadata, else `--` + the field name with `_` → `-` (`--lora-r`); a few have a
  short alias too (`SHORT_ALIASES`);
- type: from the annotation. `int`, `float`, `str` and `Path` as they are; `bool` as a `--x/--no-x` pair;
  an Enum (`Precision`, `PackMode`, …) as a choice of its values, handed on as the plain string; an
  int `Literal` (the stage) as an int range; `list[str]` as ONE comma-separated value
  (`--lora-projections q_proj,v_proj`; blanks around items are dropped);
- help: the field's description (what `vlmft profiles show` prints), in the panel of the field's group;
- default: none shown. Every option defaults to None, "not given", so the layers below the command line
  (stage defaults, profile, config file, VLMFT_* environment) decide; only the options given reach the
  command, in `settings_flags`.

Integer bounds (`ge`, `gt`, `le`, `lt`) and closed float bounds become the option's range; the settings model
validates everything again (open float bounds only there) with one-line `ConfigError`s.

    @with_setting_options(exclude={"stage"})
    def command(json: JsonOption = False, *, settings_flags: dict[str, Any]) -> None: ...
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import typer
from pydantic.fields import FieldInfo

from vlmft_cli.settings import Settings, field_extra

#: Short aliases kept from the hand-written options.
SHORT_ALIASES: dict[str, str] = {"stage": "-s", "profile": "-p", "data": "-d", "model": "-m", "experiment": "-e", "out": "-o"}

#: The name of the parameter the wrapped command receives the given settings in.
FLAGS_PARAMETER = "settings_flags"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class SettingOption:
    """One setting's option: the parameter Typer sees and how its value turns back into a setting."""

    field: str
    flags: tuple[str, ...]  # ("--lr",), ("--data", "-d"), ("--gradient-checkpointing/--no-gradient-checkpointing",)
    parameter: inspect.Parameter
    convert: Callable[[Any], Any]

    @property
    def flag(self) -> str:
        return self.flags[0].split("/")[0]


def long_flag(name: str) -> str:
    """The long flag of a setting: its `flag` metadata or `--field-name`."""
    return field_extra(name).get("flag") or "--" + name.replace("_", "-")


def setting_options(exclude: Iterable[str] = (), help: Mapping[str, str] | None = None) -> list[SettingOption]:
    """The options of every `Settings` field except `exclude`, in field order; `help` replaces a field's
    help text where the command means something more specific by it."""
    excluded = set(exclude)
    unknown = excluded - set(Settings.model_fields) | set(help or {}) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"not settings: {sorted(unknown)}")
    return [_option(name, info, (help or {}).get(name)) for name, info in Settings.model_fields.items() if name not in excluded]


def with_setting_options(exclude: Iterable[str] = (), *, help: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Append the setting options to a command's signature (as `__signature__`, which Typer reads).

    The command declares a keyword parameter `settings_flags`; it is called with its own parameters and
    `settings_flags` = {field name: value} of the settings given on the command line (never None values).
    """
    options = setting_options(exclude, help)

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        if FLAGS_PARAMETER not in signature.parameters:
            raise TypeError(f"{func.__qualname__} needs a {FLAGS_PARAMETER!r} parameter to receive the given settings")
        own = [p for p in signature.parameters.values() if p.name != FLAGS_PARAMETER]
        _check_no_clash(func, own, options)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for option in options:
                value = kwargs.pop(option.field, None)
                if value is not None:
                    given[option.field] = option.convert(value)
            return func(*args, **kwargs, **{FLAGS_PARAMETER: given})

        parameters = [*own, *(option.parameter for option in options)]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not inspect.Parameter.empty}
        if signature.return_annotation is not inspect.Signature.empty:
            wrapper.__annotations__["return"] = signature.return_annotation
        return wrapper  # type: ignore[return-value]

    return decorate


# --- one option ------------------------------------------------------------------------------------


def _option(name: str, info: FieldInfo, help_text: str | None) -> SettingOption:
    kind = _unwrap_optional(info.annotation)
    flag = long_flag(name)
    extra_kwargs: dict[str, Any] = {}
    convert: Callable[[Any], Any] = _same
    help_text = help_text or info.description or ""
    if kind is bool:
        flags: tuple[str, ...] = (f"{flag}/--no-{flag.removeprefix('--')}",)
        python_type: Any = bool
    else:
        flags = (flag, SHORT_ALIASES[name]) if name in SHORT_ALIASES else (flag,)
        if get_origin(kind) is Literal:
            python_type, extra_kwargs = _int_literal(name, get_args(kind))
        elif inspect.isclass(kind) and issubclass(kind, Enum):
            python_type, convert = kind, _enum_value
        elif get_origin(kind) is list and get_args(kind) == (str,):
            python_type, convert = str, _comma_separated
            help_text = f"{help_text} Comma-separated."
        elif kind in (int, float, str, Path):
            python_type, extra_kwargs = kind, _bounds(kind, info.metadata)
        else:
            raise TypeError(f"setting {name}: no command-line form for {info.annotation!r}")
    option = typer.Option(*flags, help=help_text, rich_help_panel=field_extra(name).get("group"), show_default=False, **extra_kwargs)
    annotation = Annotated[Union[python_type, None], option]  # noqa: UP007 - a runtime-built union
    parameter = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    return SettingOption(field=name, flags=flags, parameter=parameter, convert=convert)


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _int_literal(name: str, values: tuple[Any, ...]) -> tuple[type, dict[str, Any]]:
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or sorted(values) != list(range(min(values), max(values) + 1)):
        raise TypeError(f"setting {name}: only a Literal of consecutive ints has a command-line form, not {values!r}")
    return int, {"min": min(values), "max": max(values)}


def _bounds(kind: type, metadata: list[Any]) -> dict[str, Any]:
    """The option range of a number: integer bounds exactly, float bounds only where closed."""
    if kind not in (int, float):
        return {}
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min"] = item.ge
        elif isinstance(item, annotated_types.Le):
            bounds["max"] = item.le
        elif kind is int and isinstance(item, annotated_types.Gt):
            bounds["min"] = item.gt + 1
        elif kind is int and isinstance(item, annotated_types.Lt):
            bounds["max"] = item.lt - 1
    return bounds


def _same(value: Any) -> Any:
    return value


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _comma_separated(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _declared_flags(parameter: inspect.Parameter) -> set[str]:
    """The option strings a command's own parameter declares (Annotated style)."""
    declared: set[str] = set()
    for info in get_args(parameter.annotation)[1:] if get_origin(parameter.annotation) is Annotated else ():
        for decl in (getattr(info, "default", None), *(getattr(info, "param_decls", None) or ())):
            if isinstance(decl, str) and decl.startswith("-"):
                declared.update(part for part in decl.split("/") if part)
    return declared


def _check_no_clash(func: Callable[..., Any], own: list[inspect.Parameter], options: list[SettingOption]) -> None:
    names = {p.name for p in own} & {o.field for o in options}
    flags = set().union(*(_declared_flags(p) for p in own)) & {part for o in options for f in o.flags for part in f.split("/")}
    if names or flags:
        raise TypeError(f"{func.__qualname__} declares setting options itself: {sorted(names | flags)}; exclude them")
