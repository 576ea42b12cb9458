"""What people type into Chorus (persona specs, API bodies), checked as the schema says.

Numbers: JSON and YAML numbers only. `true` is not $1 and "3" is not a count, but 2 is a fine
amount of dollars and 3.0 a fine count, as JSON Schema's `number` and `integer` read them.

Text:
Text is normalised to NFC, so one word has one spelling in prompts, matching and hashtags. Control
characters, bidirectional controls and zero-width spaces are refused everywhere (they reorder or
hide what a reviewer sees); labels (names) refuse every invisible format character and must begin
and end with a visible one, so 80 zero-width spaces are not a display name.

Each rule is one regular expression that the server checks and the OpenAPI schema publishes, so
the two cannot drift apart; the messages name the offending character.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field


def _only(kind: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        # bool is an int subclass, and lax mode reads digits out of strings: neither is a number.
        if isinstance(value, bool | str | bytes):
            got = "a boolean" if isinstance(value, bool) else "text"
            raise ValueError(f"must be a valid {kind}, not {got}")
        return value

    return BeforeValidator(check)


ONLY_INTEGERS = _only("integer")
ONLY_NUMBERS = _only("number")
# Bounds of an optional one go before ONLY_*, inside the Annotated, or the schema prints them
# as pydantic's "ge"/"le" rather than JSON Schema's minimum/maximum.
Integer = Annotated[int, ONLY_INTEGERS]
Number = Annotated[float, ONLY_NUMBERS]

# C0 and C1 controls but tab and newline (line structure is part of prose), bidi controls (LRM,
# RLM, ALM, embeddings, overrides, isolates) and zero-width characters that never mean anything
# inside prose (ZWJ and ZWNJ stay: emoji sequences and several scripts need them).
_PROSE_FORBIDDEN = (
    "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u200b\u2060-\u2064\ufeff\u180e"
)
# Labels also refuse tab, newline and every other format character (Unicode 15's Cf, Zl, Zp),
# the ZWJ of an emoji sequence excepted.
_LABEL_FORBIDDEN = (
    _PROSE_FORBIDDEN + "\t\n\u00ad\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\u200c\u2028\u2029"
    "\u206a-\u206f\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# Letters that render as blank, and the joiner: not a visible first or last character.
_BLANK = "\u115f\u1160\u3164\uffa0\u2800\u200d"

# Surrounding whitespace is stripped before these apply; the schema states the stripped form.
PROSE_PATTERN = rf"^[^\s{_PROSE_FORBIDDEN}](?:[^{_PROSE_FORBIDDEN}]*[^\s{_PROSE_FORBIDDEN}])?$"
LABEL_PATTERN = (
    rf"^[^\s{_LABEL_FORBIDDEN}{_BLANK}](?:[^{_LABEL_FORBIDDEN}]*[^\s{_LABEL_FORBIDDEN}{_BLANK}])?$"
)
# A hashtag platforms link: '#', then letters, digits or '_' (after NFC; marks are allowed too).
HASHTAG_PATTERN = r"^#\w+$"

_PROSE = re.compile(PROSE_PATTERN)
_LABEL = re.compile(LABEL_PATTERN)
_PROSE_BAD = re.compile(f"[{_PROSE_FORBIDDEN}]")
_LABEL_BAD = re.compile(f"[{_LABEL_FORBIDDEN}]")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def _check(value: str, whole: re.Pattern[str], bad: re.Pattern[str]) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if whole.fullmatch(value):
        return value
    if (found := bad.search(value)) is not None:
        raise ValueError(f"contains the invisible or control character {_describe(found.group())}; remove it")
    if not value:
        raise ValueError("must not be empty")
    raise ValueError("must begin and end with a visible character")


def clean_prose(value: str) -> str:
    """NFC, stripped; no control, bidi-control or zero-width space; not blank."""
    return _check(value, _PROSE, _PROSE_BAD)


def clean_label(value: str) -> str:
    """A name people read: clean prose on one line, without format characters, that begins and
    ends with a visible character."""
    return _check(value, _LABEL, _LABEL_BAD)


def nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def hashtag_problem(tag: str) -> str | None:
    """Why `tag` (NFC) is not a hashtag platforms link, or None."""
    body = tag[1:]
    if not tag.startswith("#") or not body:
        return "must look like #word"
    for char in body:
        if not (char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")):
            if char.isspace():
                return "must look like #word"
            return f"must look like #word: {_describe(char)} is not a letter, digit or _"
    return None


# Free text: a voice, an audience, topics, example posts, banned words.
Prose = Annotated[str, AfterValidator(clean_prose), Field(json_schema_extra={"pattern": PROSE_PATTERN})]
# A short name people read: a display name, a key's name.
Label = Annotated[str, AfterValidator(clean_label), Field(json_schema_extra={"pattern": LABEL_PATTERN})]
Hashtag = Annotated[str, Field(json_schema_extra={"pattern": HASHTAG_PATTERN})]


def field_path(loc: tuple[int | str, ...]) -> str:
    """Where in an input a problem is, as people write it: ``platforms[0].name``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
