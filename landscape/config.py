"""Nested YAML configs with ``key=value`` overrides, checked against a schema of defaults.

A config is a plain nested dict. Defaults define which keys exist: an override or a YAML
file that names a key the defaults do not know is refused with the list of valid keys,
so a typo never silently runs the wrong experiment. Sections listed in ``open_sections``
accept new keys (e.g. per-attack parameters).
"""
from __future__ import annotations

import copy
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import LandscapeError


class ConfigError(LandscapeError, ValueError):
    """A config file or override is malformed or names an unknown key."""


def parse_value(text: str) -> Any:
    """Parse an override value with YAML rules (``[a, b]`` is a list, ``1e-3`` a float)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {str(exc).splitlines()[0]}") from None
    if isinstance(value, str):
        frac = parse_number(value, strict=False)
        if frac is not None:
            return frac
    return value


def parse_number(value: Any, strict: bool = True, name: str = "value") -> float | None:
    """Return ``value`` as a float; accepts fractions such as ``"8/255"`` or ``"0.5/255"``."""
    if isinstance(value, bool):
        if strict:
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError, OverflowError):
            pass
        num, slash, den = value.strip().partition("/")
        if slash:   # a decimal numerator or denominator, e.g. 0.5/255 (Fraction takes only whole ones)
            try:
                a, b = float(num), float(den)
                if b != 0 and math.isfinite(a / b):
                    return a / b
            except (ValueError, OverflowError):
                pass
    if strict:
        raise ConfigError(f"{name} must be a number such as 0.5 or 8/255, got {value!r}")
    return None


def _check_keys(data: dict, schema: dict, prefix: str, open_sections: Iterable[str]) -> None:
    open_sections = set(open_sections)
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in schema:
            if prefix.rstrip(".") in open_sections:
                continue
            valid = ", ".join(sorted(f"{prefix}{k}" for k in schema))
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {valid}")
        if isinstance(schema[key], dict) and schema[key] and path not in open_sections:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
            _check_keys(value, schema[key], path + ".", open_sections)


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def overrides_to_dict(overrides: Iterable[str]) -> dict:
    """Turn ``["a.b=1", "c=[x, y]"]`` into ``{"a": {"b": 1}, "c": ["x", "y"]}``."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. data.n_examples=100)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = parse_value(text)
    return out


def load_config(
    defaults: dict,
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    open_sections: Iterable[str] = (),
) -> dict:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides."""
    cfg = copy.deepcopy(defaults)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        _check_keys(data, defaults, "", open_sections)
        cfg = merge(cfg, data)
    upd = overrides_to_dict(overrides)
    _check_keys(upd, defaults, "", open_sections)
    return _clear_open_mappings(merge(cfg, upd), upd, defaults)


def _clear_open_mappings(cfg: dict, upd: dict, defaults: dict) -> dict:
    """``key={}`` empties a mapping whose default is empty (``defense.attack_modes={}`` drops what the
    config file put there); a deep merge alone would keep it. Sections with defaults are left as merged."""
    for key, value in upd.items():
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if value == {} and default == {} and isinstance(cfg.get(key), dict):
            cfg[key] = {}
        elif isinstance(value, dict) and isinstance(cfg.get(key), dict) and isinstance(default, dict):
            _clear_open_mappings(cfg[key], value, default)
    return cfg


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
