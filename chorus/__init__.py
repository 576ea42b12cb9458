"""Chorus: a fleet of AI social-media personas on Ray."""

__version__ = "0.1.0"
