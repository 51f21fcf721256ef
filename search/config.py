"""Flat configs: typed defaults, `--set key=value` overrides, unknown keys rejected loudly."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class UserError(Exception):
    """A mistake the user can fix. The CLI prints the message as one line and exits with code 2."""


def parse_value(key: str, text: str, default: Any) -> Any:
    """Turn the text of `--set key=text` into the type of the key's default value."""
    kind = type(default)
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return text
    except ValueError:
        raise UserError(f"--set {key}={text}: {key} takes a {kind.__name__} value "
                        f"(default {default!r})") from None


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """['lr=0.01', 'setting=cls'] -> {'lr': '0.01', 'setting': 'cls'}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: write it as key=value, e.g. --set lr=0.01")
        out[key.strip()] = value.strip()
    return out


def check_known(keys: Iterable[str], known: Mapping[str, Any], what: str = "config key") -> None:
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise UserError(f"unknown {what} {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")


def resolve(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults updated by overrides (text from the command line, or typed values from code)."""
    check_known(overrides, defaults)
    config = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, str) and not isinstance(defaults[key], str):
            value = parse_value(key, value, defaults[key])
        elif isinstance(defaults[key], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(defaults[key]):
            raise UserError(f"{key}={value!r}: expected a {type(defaults[key]).__name__}")
        config[key] = value
    return config


def format_config(config: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """Short one-line form, e.g. 'lr=0.001 dropout=0.5 optimizer=adam'."""
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    return " ".join(f"{k}={fmt(config[k])}" for k in (keys if keys is not None else config))
