"""What every command shares: logging to stderr (stdout may carry video)."""
from __future__ import annotations

import logging
import sys


def setup_logging(quiet: bool) -> None:
    """Route every log line to stderr as ``vidtriplane: LEVEL: message``; ``quiet`` keeps warnings only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vidtriplane: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("libav").setLevel(logging.ERROR)
