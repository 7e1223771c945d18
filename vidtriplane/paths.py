"""Where vidtriplane keeps its files on disk (nothing heavy is imported here).

``home_dir()`` is the root of everything vidtriplane stores for a user: the weight cache, the pose
cache and user presets. It is ``$VIDTRIPLANE_HOME``, else ``$XDG_CACHE_HOME/vidtriplane``, else
``~/.cache/vidtriplane``.
"""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "VIDTRIPLANE_HOME"


def home_dir() -> Path:
    """$VIDTRIPLANE_HOME, else $XDG_CACHE_HOME/vidtriplane, else ~/.cache/vidtriplane."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vidtriplane"


def user_presets_dir() -> Path:
    """Folder searched for user presets (``NAME.yaml``) before the ones shipped with the package."""
    return home_dir() / "configs"


def package_presets_dir(kind: str) -> Path:
    """The presets shipped inside the package: ``kind`` is ``configs`` or ``pipelines``."""
    return Path(__file__).resolve().parent / "_presets" / kind
