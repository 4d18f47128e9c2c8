"""One exception type for bad input, so entry points can print it without a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: a config value, a missing file, an impossible combination.

    The message always names the offending key (or file) and what is allowed.
    """


def check(cond: bool, key: str, value: object, allowed: str) -> None:
    """Raise ``ConfigError`` naming ``key`` when ``cond`` is false."""
    if not cond:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")
