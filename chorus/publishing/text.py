"""Each platform's length unit and rich text, in one place.

Bluesky counts 300 graphemes (user-perceived characters: a family emoji or a flag is one); X
weights characters to 280 (most scripts beyond Latin count 2, every URL 23); Mastodon counts 500
characters with every URL as 23. Bluesky links, hashtags and mentions are clickable only through
facets, whose offsets are byte positions in the UTF-8 text.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import regex

from chorus.persona import PLATFORM_LIMITS, Platform
from chorus.publishing.protocol import PermanentError

PLATFORM_UNITS: dict[Platform, str] = {
    Platform.bluesky: "graphemes",
    Platform.x: "weighted characters",
    Platform.mastodon: "characters",
}

URL_LENGTH = 23  # what X and Mastodon count for any link, however long
# Punctuation that ends a sentence rather than a link or a tag.
_TRAILING = ".,;:!?'\")]}"
_URL = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
_TAG = re.compile(r"(?<![\w&/#])#(\w+)")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_MENTION = re.compile(rf"(?<![\w@/])@({_LABEL}(?:\.{_LABEL})+)")
# twitter-text v3: code points in these ranges weigh 1, all others 2.
_X_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
_EMOJI = regex.compile(r"\p{Extended_Pictographic}")


def _strip_trailing(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1] in _TRAILING:
        # A closing parenthesis that closes one opened inside the link belongs to it.
        if text[end - 1] == ")" and text[start:end].count("(") >= text[start:end].count(")"):
            break
        end -= 1
    return end


def urls(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the links in `text`."""
    return [(m.start(), _strip_trailing(text, m.start(), m.end())) for m in _URL.finditer(text)]


def grapheme_length(text: str) -> int:
    return len(regex.findall(r"\X", text))


def _without_urls(text: str) -> tuple[str, int]:
    spans = urls(text)
    kept, last = [], 0
    for start, end in spans:
        kept.append(text[last:start])
        last = end
    kept.append(text[last:])
    return "".join(kept), len(spans)


def x_weighted_length(text: str) -> int:
    rest, links = _without_urls(text)
    total = links * URL_LENGTH
    for cluster in regex.findall(r"\X", rest):
        if _EMOJI.search(cluster):
            total += 2  # an emoji sequence counts 2, however many code points it joins
            continue
        for char in cluster:
            code = ord(char)
            total += 1 if any(low <= code <= high for low, high in _X_LIGHT) else 2
    return total


def mastodon_length(text: str) -> int:
    rest, links = _without_urls(text)
    return len(rest) + links * URL_LENGTH


def length_in_unit(platform: Platform, text: str) -> int:
    if platform == Platform.bluesky:
        return grapheme_length(text)
    if platform == Platform.x:
        return x_weighted_length(text)
    if platform == Platform.mastodon:
        return mastodon_length(text)
    return len(text)


def check_fits(platform: Platform, text: str, limit: int | None = None) -> None:
    """PermanentError naming the length in the platform's unit when `text` does not fit."""
    limit = limit or PLATFORM_LIMITS[platform]
    length = length_in_unit(platform, text)
    if length > limit:
        unit = PLATFORM_UNITS.get(platform, "characters")
        raise PermanentError(f"the post is {length} {unit}; {platform.value} allows {limit}")


def _byte_span(text: str, start: int, end: int) -> dict[str, int]:
    return {"byteStart": len(text[:start].encode()), "byteEnd": len(text[:end].encode())}


def bluesky_facets(text: str, mention_dids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Facets for the links, hashtags and (resolved) mentions of `text`, on UTF-8 byte offsets.

    `mention_dids` maps a handle to its DID; a mention without one gets no facet (it would
    point nowhere)."""
    facets: list[dict[str, Any]] = []
    link_spans = urls(text)
    for start, end in link_spans:
        facets.append(
            {
                "index": _byte_span(text, start, end),
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": text[start:end]}],
            }
        )

    def inside_link(position: int) -> bool:
        return any(start <= position < end for start, end in link_spans)

    for match in _TAG.finditer(text):
        if inside_link(match.start()):
            continue
        end = match.end()
        tag = match.group(1)
        # A number is not a tag (#1 in a list), and Bluesky caps tags at 64 characters.
        if tag.isdigit() or len(tag) > 64:
            continue
        facets.append(
            {
                "index": _byte_span(text, match.start(), end),
                "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}],
            }
        )
    for match in _MENTION.finditer(text):
        if inside_link(match.start()):
            continue
        did = (mention_dids or {}).get(match.group(1).lower())
        if did is None:
            continue
        facets.append(
            {
                "index": _byte_span(text, match.start(), match.end()),
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}],
            }
        )
    return sorted(facets, key=lambda f: f["index"]["byteStart"])


def mentioned_handles(text: str) -> list[str]:
    return sorted({m.group(1).lower() for m in _MENTION.finditer(text)})


async def bluesky_facets_resolved(
    text: str, resolve_handle: Callable[[str], Awaitable[str | None]]
) -> list[dict[str, Any]]:
    """`bluesky_facets` with each mentioned handle resolved to its DID first."""
    dids = {}
    for handle in mentioned_handles(text):
        did = await resolve_handle(handle)
        if did is not None:
            dids[handle] = did
    return bluesky_facets(text, dids)
