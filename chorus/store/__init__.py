"""Everything that must outlive a process, in Redis: one repository (and its Lua) per aggregate.

Persona actors write here and the HTTP API reads here directly, so a read never waits on an actor
and an actor can die, restart or be passivated without losing anything. The records themselves
are Redis-free, in ``chorus/models.py``; ``keys.py`` names the keys, ``client.py`` makes clients.
"""
