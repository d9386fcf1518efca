"""Config errors: each names the key and what is allowed, so entry points can print it without a traceback."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names the key and what is allowed."""


class UnknownKeyError(ConfigError, KeyError):
    """A key no section has. Also a KeyError: callers written when unknown keys raised KeyError still catch it."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument (quotes and escaped newlines); show the sentence itself.
        return str(self.args[0]) if self.args else ""


def unknown_key(dotted: str, known: Iterable[str]) -> UnknownKeyError:
    """The error for `dotted`, listing the section's keys and the closest one when a typo is likely."""
    known = sorted(known)
    name = dotted.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    section = dotted[: -len(name)]
    hint = f" (did you mean {section + close[0]!r}?)" if close else ""
    return UnknownKeyError(f"unknown config key {dotted!r}{hint}; known keys here: {', '.join(known)}")
