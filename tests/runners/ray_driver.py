"""A driver process for the Ray signal test: ``run_ray`` with a :class:`~tests.runners.ray_tasks.PausingTask`,
signal handling and exit codes as in the CLI.

    python tests/runners/ray_driver.py ADDRESS INPUT OUTPUT SYNC_FIFO HOLD_FIFO
"""
from __future__ import annotations

import sys

from tests.runners.media import FAST
from tests.runners.ray_tasks import PausingTask
from vidtriplane.commands.common import handle, install_signal_handlers, setup_logging
from vidtriplane.config import resolve
from vidtriplane.runners.engine import RayOptions
from vidtriplane.runners.jobs import Job
from vidtriplane.runners.ray import run_ray

if __name__ == "__main__":
    address, src, out, sync, hold = sys.argv[1:]
    setup_logging(quiet=True)
    install_signal_handlers()
    cfg = resolve("render", pipeline="aligned", configs=["generated-tiny"], overrides=FAST)
    task = PausingTask(cfg, progress=False, segment=1, sync=sync, hold=hold)
    try:
        run_ray([Job(src, out, (out,))], task, folder=False, overwrite=False,
                options=RayOptions(address=address, workers=2, segment_frames=4, progress=False))
    except BaseException as exc:  # as the CLI does: one line, the exit code of the signal
        sys.exit(exc.code if isinstance(exc, SystemExit) else handle(exc))
