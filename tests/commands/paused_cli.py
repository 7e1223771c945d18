"""Run the vidtriplane CLI with a pause point, for tests that signal or kill it at a known moment.

The ``VT_PAUSE_AT``-th model batch of the process (default 2) first writes one byte to the file
descriptor ``VT_SYNC_FD``, then waits for a byte on ``VT_HOLD_FD``; meanwhile the test signals or kills the
process. No sleeps: the test blocks on the sync pipe until the child is exactly there.

    python tests/commands/paused_cli.py render in.mp4 -o out.mp4 ...
"""
from __future__ import annotations

import os
import select
import sys

from vidtriplane.pipeline import build

_real = build.Infer.__call__
_calls = {"n": 0}


def _paused(self, batch, clock):
    _calls["n"] += 1
    if _calls["n"] == int(os.environ.get("VT_PAUSE_AT", "2")):
        os.write(int(os.environ["VT_SYNC_FD"]), b"!")
        hold = int(os.environ["VT_HOLD_FD"])
        # wait on the pipe in short select() calls: a signal delivered to another thread of the process
        # would not interrupt one long blocking read, but Python runs its handler between these calls
        while not select.select([hold], [], [], 0.05)[0]:
            pass
        os.read(hold, 1)
    return _real(self, batch, clock)


build.Infer.__call__ = _paused

if __name__ == "__main__":
    from vidtriplane.cli import main

    sys.argv[0] = "vidtriplane"
    main()
