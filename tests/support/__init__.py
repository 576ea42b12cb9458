"""Helpers the tests share: factories, the fake model client, the process helpers they need.

Fixtures stay in tests/conftest.py (pytest finds them there); everything a test imports by name
lives here, so no test imports conftest and no test reaches into the ops package for a port.
"""
