"""Command-line overrides of a sweep spec, Hydra-style: ``--set base.epochs=5``.

``KEY=VALUE`` sets one entry of the spec's tables: ``KEY`` is a dotted path
(``trials``, ``seed``, ``base.lr``, ``grid.operator``), created when missing;
``VALUE`` is read as a TOML value (``5``, ``1e-3``, ``true``, ``"x"``,
``[1, 2]``) and otherwise taken as a string, as Hydra does, so
``base.operator=random`` and ``grid.operator=[random,none]`` need no quotes.
The result is validated like the file itself.
"""

from __future__ import annotations

import tomllib

from sparseae.errors import ConfigError


def parse_value(text: str):
    """A TOML value, a bracketed list of bare words, or the text itself."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(item) for item in inner.split(",")] if inner else []
    return text


def apply(spec: dict, overrides) -> dict:
    """``spec`` (the TOML's tables) with every ``KEY=VALUE`` of ``overrides`` set."""
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ConfigError(f"--set: expected KEY=VALUE such as base.epochs=5, got {item!r}")
        table = spec
        for i, part in enumerate(parts[:-1]):
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item}: {'.'.join(parts[:i + 1])} is not a table")
            table = nxt
        table[parts[-1]] = parse_value(value)
    return spec
