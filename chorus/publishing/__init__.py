"""Publishing to the platforms: one adapter protocol (``protocol.py``) and an adapter per platform.

The core of publishing: it imports nothing of Ray or HTTP serving. The outbox that feeds the
adapters is in ``chorus/store/outbox.py``; the publisher actor that drives them is in ``actors/``.
"""
