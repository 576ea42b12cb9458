"""Where Chorus keeps its local files. Apart from the local stack, which imports Ray: commands
that only need a path (`chorus devnet status`, the key files) stay quick to start."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chorus"
