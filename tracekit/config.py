"""Rule configuration: which rules run and with which thresholds, from a TOML rules file or a dict.

A rules file holds one table per rule, named as the rule is registered (``tracekit detectors`` lists them)::

    [rules.multi-pmi-per-exit]
    enabled = true          # the only key every rule accepts
    min_pmis = 2            # any key of the rule's ``defaults``, with a value of the same type

    [rules.mutex-hotspots]
    enabled = false

Values are merged over each detector's ``defaults`` (:meth:`Config.for_rule`). Anything else — an unknown rule, an
unknown key, a value of the wrong type, TOML that does not parse — is a :class:`~tracekit.errors.ConfigError` naming
the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

__all__ = ["Config", "RuleConfig", "load_config", "config_from_dict"]

_ENABLED = "enabled"


@dataclass(frozen=True)
class RuleConfig:
    """One rule's settings as the user gave them (not yet merged over the rule's defaults).

    Attributes:
        enabled: False turns the rule off.
        options: the thresholds the user set (read-only mapping).
    """

    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    """The settings of every rule, by rule name; rules not named keep their defaults and run.

    Attributes:
        rules: rule name → :class:`RuleConfig` (read-only mapping).
        source: the file it was read from, if any (for messages).
    """

    rules: Mapping[str, RuleConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: str | None = None

    def enabled(self, rule: str) -> bool:
        """True unless the configuration turns ``rule`` off."""
        rc = self.rules.get(rule)
        return True if rc is None else rc.enabled

    def for_rule(self, rule: str, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The options ``rule`` runs with: its ``defaults`` updated by what the user set.

        Args:
            rule: the rule's registered name.
            defaults: the detector's ``defaults`` dict.

        Returns:
            A new dict the detector may keep.
        """
        out = dict(defaults or {})
        rc = self.rules.get(rule)
        if rc is not None:
            out.update(rc.options)
        return out

    def merged(self, other: Config) -> Config:
        """A configuration where ``other``'s settings win over this one's, rule by rule and key by key."""
        rules = dict(self.rules)
        for name, rc in other.rules.items():
            base = rules.get(name)
            if base is None:
                rules[name] = rc
            else:
                rules[name] = RuleConfig(rc.enabled and base.enabled,
                                         MappingProxyType({**base.options, **rc.options}))
        return Config(MappingProxyType(rules), other.source or self.source)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def config_from_dict(data: Mapping[str, Any], *, detectors: Mapping[str, type] | None = None,
                     source: str | None = None) -> Config:
    """Build a :class:`Config` from ``{"rules": {name: {key: value}}}`` (or directly ``{name: {key: value}}``).

    Args:
        data: the parsed TOML (or a dict written in code).
        detectors: name → detector class to check rule names and option types against (default: the registry).
        source: where ``data`` came from, for error messages.

    Raises:
        ConfigError: an unknown rule or key, a value whose type differs from the default's, a non-table entry.
    """
    where = source or "<config>"
    if detectors is None:
        from .detectors import registry

        detectors = registry()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of rules, found {_kind(data)}")
    if "rules" in data:
        extra = sorted(set(data) - {"rules"})
        if extra:
            raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(extra)}; expected only [rules.<name>]")
        data = data["rules"]
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected [rules.<name>] tables, found {_kind(data)}")
    rules: dict[str, RuleConfig] = {}
    for name, table in data.items():
        if name not in detectors:
            known = ", ".join(sorted(detectors)) or "none registered"
            raise ConfigError(f"{where}: unknown rule {name!r} (known: {known})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: rules.{name}: expected a table, found {_kind(table)}")
        defaults = dict(getattr(detectors[name], "defaults", {}) or {})
        enabled = True
        options: dict[str, Any] = {}
        for key, value in table.items():
            if key == _ENABLED:
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: rules.{name}.enabled: expected true or false, found {value!r}")
                enabled = value
                continue
            if key not in defaults:
                known = ", ".join(sorted(defaults)) or "none"
                raise ConfigError(f"{where}: rules.{name}: unknown option {key!r} (options: enabled, {known})")
            want, got = _kind(defaults[key]), _kind(value)
            if defaults[key] is not None and want != got:
                raise ConfigError(f"{where}: rules.{name}.{key}: expected a {want} like {defaults[key]!r}, "
                                  f"found {value!r}")
            if isinstance(defaults[key], float) and isinstance(value, int):
                value = float(value)
            options[key] = value
        rules[name] = RuleConfig(enabled, MappingProxyType(options))
    return Config(MappingProxyType(rules), source)


def load_config(path: str | os.PathLike, *, detectors: Mapping[str, type] | None = None) -> Config:
    """Read a TOML rules file.

    Args:
        path: the file.
        detectors: as for :func:`config_from_dict`.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or names an unknown rule/option or a wrong type.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read rules file: {exc.strerror}") from exc
    try:
        data = _toml.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} @{exc.start:#x}: expected UTF-8 TOML text") from exc
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: expected TOML: {exc}") from exc
    return config_from_dict(data, detectors=detectors, source=str(p))
