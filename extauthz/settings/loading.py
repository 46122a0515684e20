"""Reading settings: defaults, then a TOML file, then ``EXTAUTHZ_<SECTION>_<KEY>`` variables,
each value converted to its field's type (bool, int, float, string, list, enum) or refused with
a one-line :class:`~extauthz.errors.SettingsError` naming the dotted key."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from extauthz.errors import SettingsError
from extauthz.settings.model import Settings
from extauthz.settings.validation import validate


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from defaults, an optional TOML file and ``environ``
    (``os.environ`` when ``None``), then validate it.

    :raises SettingsError: unreadable file, unknown table or key, or a bad value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"settings file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {path}: not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    sections: dict[str, Any] = {}
    section_types = get_type_hints(Settings)
    for name in raw:
        if name not in section_types:
            raise SettingsError(f"{name}: unknown settings table")
    for name, cls in section_types.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise SettingsError(f"{name}: expected a table")
        sections[name] = _build_section(name, cls, table, env)
    settings = Settings(**sections)
    validate(settings)
    return settings


def _build_section(name: str, cls: type, table: dict[str, Any], env: Mapping[str, str]) -> Any:
    hints = get_type_hints(cls)
    keys = [f.name for f in dataclasses.fields(cls) if f.init]  # derived fields are not keys
    values: dict[str, Any] = {}
    for key in table:
        if key not in keys:
            raise SettingsError(f"{name}.{key}: unknown key")
    for key in keys:
        dotted = f"{name}.{key}"
        env_name = f"EXTAUTHZ_{name}_{key}".upper()
        if env_name in env:
            values[key] = _from_text(dotted, hints[key], env[env_name])
        elif key in table:
            values[key] = _coerce(dotted, hints[key], table[key])
    return cls(**values)


def _from_text(dotted: str, kind: Any, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{dotted}: expected true or false, got {text!r}")
    if kind in (int, float):
        try:
            number = kind(text.strip())
        except ValueError:
            raise SettingsError(f"{dotted}: expected a number, got {text!r}") from None
        return _finite(dotted, number)
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if kind == int | str:
        stripped = text.strip()
        return int(stripped) if stripped.isascii() and stripped.isdigit() else stripped
    if _is_enum(kind):
        return _member(dotted, kind, text)
    return text


def _finite(dotted: str, number: float) -> float:
    if not math.isfinite(number):
        raise SettingsError(f"{dotted}: expected a finite number, got {number!r}")
    return number


def _coerce(dotted: str, kind: Any, value: Any) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{dotted}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{dotted}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{dotted}: expected a number, got {value!r}")
        return _finite(dotted, float(value))
    if kind == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{dotted}: expected a list of strings, got {value!r}")
        return tuple(value)
    if kind == int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise SettingsError(f"{dotted}: expected an integer or a string, got {value!r}")
        return value
    if _is_enum(kind):
        return _member(dotted, kind, value)
    if not isinstance(value, str):
        raise SettingsError(f"{dotted}: expected a string, got {value!r}")
    return value


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.StrEnum)


def _member(dotted: str, kind: type[enum.StrEnum], value: object) -> enum.StrEnum:
    """The member of ``kind`` whose value is ``value`` (exactly: no case folding)."""
    for member in kind:
        if isinstance(value, str) and value == member.value:
            return member
    names = ", ".join(member.value for member in kind)
    raise SettingsError(f"{dotted}: expected one of {names}, got {value!r}")
