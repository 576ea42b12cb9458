"""Bluesky record keys derived from the post: a retry of the same post always targets the same
record, so "create only if absent" (putRecord with swapRecord null) can never post it twice."""

from __future__ import annotations

import hashlib
import re

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID_PATTERN = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def tid_for_post(post_id: str, created_at: float) -> str:
    """A valid atproto TID (13 base32-sortable characters) that is a pure function of the post:
    its record time in microseconds in the top 53 bits, a 10-bit clock id hashed from its id."""
    clock_id = int.from_bytes(hashlib.sha256(post_id.encode()).digest()[:2], "big") & 0x3FF
    micros = round(created_at * 1_000_000) & ((1 << 53) - 1)
    n = (micros << 10) | clock_id
    return "".join(_ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(13)))
