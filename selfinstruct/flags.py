"""Command-line flags derived from a pydantic settings model: the model is the one place for a
setting's name, type, default and help.

Every field is a flag, `--field-name`, typed from its annotation (a `Literal` gives the choices, a
list a repeatable flag), with the field's description and the model's default as its help. A field
holding a section (a model of its own) gives flags only when marked `FlagGroup(prefix)`: one flag
per field of the section, named prefix + the field's flag name (a section within a section adds its
own prefix, and its flags join the outer section's group). `Flag(...)` next to a field spells its
flag differently. A flag sets its dotted config key (`backend.base_urls`), and only when the user
gives it, so a config file keeps the settings no flag names (see config.load_config).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from selfinstruct.resources import shipped_name

_GIVEN = "given_flags"  # namespace attribute: dotted key -> the option string the user typed


@dataclass(frozen=True)
class Flag:
    """How a field's flag differs from `--field-name`."""

    name: str | None = None  # without dashes or the group's prefix: Flag("base-url"); "--x": exactly --x
    short: str | None = None  # an alias, e.g. "-n"
    split: str | None = None  # a list given as one value split at this, not a repeatable flag


@dataclass(frozen=True)
class FlagGroup:
    """Marks a section whose fields are flags, named `--{prefix}{flag name}`."""

    prefix: str = ""


@dataclass(frozen=True)
class ConfigFlag:
    key: str  # dotted config key
    name: str  # "--top-p"
    short: str | None
    field: FieldInfo
    default: Any  # from the model's default instance, so a section keeps its own defaults
    split: str | None
    group: str | None  # the section field, or None at the top level


def config_flags(model: type[BaseModel]) -> list[ConfigFlag]:
    """The flags of `model`, whose fields must all have defaults, in field order."""
    return list(_walk(model(), "", "", None))


def _walk(defaults: BaseModel, key_prefix: str, flag_prefix: str, group: str | None) -> Iterator[ConfigFlag]:
    for name, field in type(defaults).model_fields.items():
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            section = _marker(field, FlagGroup)
            if section is not None:
                yield from _walk(value, f"{key_prefix}{name}.", flag_prefix + section.prefix, group or name)
            continue
        mark = _marker(field, Flag) or Flag()
        flag_name = (
            mark.name
            if (mark.name or "").startswith("--")
            else (f"--{flag_prefix}{mark.name or name.replace('_', '-')}")
        )
        yield ConfigFlag(key_prefix + name, flag_name, mark.short, field, value, mark.split, group)


def _marker(field: FieldInfo, kind: type) -> Any:
    return next((m for m in field.metadata if isinstance(m, kind)), None)


def add_config_flags(parser: argparse.ArgumentParser, model: type[BaseModel], config_flag: str) -> None:
    """Add the flags of `model` to parser, in argument groups: its top-level settings, then one group
    per flagged section, headed by the section's description."""
    groups: dict[str | None, Any] = {}
    for flag in config_flags(model):
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(*_group_heading(model, flag.group, config_flag))
        options, kwargs = _argument(flag)
        groups[flag.group].add_argument(*options, **kwargs)


def _group_heading(model: type[BaseModel], group: str | None, config_flag: str) -> tuple[str, str]:
    if group is None:
        return "settings", f"Each flag overrides the setting of that name in the {config_flag} file."
    section = model.model_fields[group].description or ""
    return group, f"{section} Flags set the [{group}] table of the {config_flag} file."


def given_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the user's flags set (dotted key -> value) and the flag each was typed as."""
    typed = getattr(args, _GIVEN, {})
    return {key: getattr(args, key) for key in typed}, dict(typed)


class _SetKey(argparse.Action):
    """Sets the flag's dotted config key (its dest) and records the option string the user typed,
    so that errors name it."""

    def __init__(self, option_strings, dest, repeat: bool = False, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.repeat = repeat

    def __call__(self, parser, namespace, values, option_string=None):
        if self.nargs == 0:  # --flag / --no-flag
            values = not option_string.startswith("--no-")
        elif self.repeat:
            values = [*getattr(namespace, self.dest, []), values]
        setattr(namespace, self.dest, values)
        setattr(namespace, _GIVEN, getattr(namespace, _GIVEN, {}) | {self.dest: option_string})


def _argument(flag: ConfigFlag) -> tuple[list[str], dict[str, Any]]:
    """The option strings and add_argument keywords of a flag."""
    options = [flag.name] + ([flag.short] if flag.short else [])
    kwargs: dict[str, Any] = {
        "dest": flag.key, "action": _SetKey, "default": argparse.SUPPRESS, "help": _help(flag),
        "metavar": flag.name.lstrip("-").upper().replace("-", "_"),
    }  # fmt: skip
    annotation = _without_none(flag.field.annotation)
    origin = typing.get_origin(annotation)
    if annotation is bool:  # --dry-run / --no-dry-run, so a flag can also undo the config file
        return [*options, "--no-" + flag.name[2:]], kwargs | {"nargs": 0, "metavar": None}
    if origin is Literal:
        choices = typing.get_args(annotation)
        return options, kwargs | {"choices": choices, "type": type(choices[0]), "metavar": None}
    if origin is list:
        (item,) = typing.get_args(annotation)
        if flag.split is None:
            return options, kwargs | {"type": _scalar(flag, item), "repeat": True}
        return options, kwargs | {"type": _splitter(flag.split, _scalar(flag, item))}
    return options, kwargs | {"type": _scalar(flag, annotation)}


def _without_none(annotation: Any) -> Any:
    """`X | None` -> X: None is a setting's "not set", which a flag never needs to say."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar(flag: ConfigFlag, annotation: Any) -> type:
    if annotation in (str, int, float, Path):
        return annotation
    raise TypeError(f"{flag.key}: no flag for a {annotation} setting — give it a type argparse can parse")


def _splitter(separator: str, item: type):
    def split(value: str) -> list:
        return [item(part.strip()) for part in value.split(separator) if part.strip()]

    split.__name__ = f"{separator!r}-separated"
    return split


def _help(flag: ConfigFlag) -> str:
    if not flag.field.description:
        raise ValueError(f"{flag.key}: a setting needs a description, its flag's help")
    text = flag.field.description.rstrip(".")
    default = _shown(flag.default, flag.split)
    if default:
        text += f" (default {default})"
    if flag.split:
        text += f"; the flag takes them {flag.split!r}-separated"
    elif typing.get_origin(_without_none(flag.field.annotation)) is list:
        text += "; repeat the flag for each"
    return (text + ".").replace("%", "%%")


def _shown(value: Any, split: str | None) -> str:
    """A default as the user would type it; "" for none (None, an empty list)."""
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        return shipped_name(value)
    if isinstance(value, list):
        return (split or " ").join(map(str, value))
    return str(value)
