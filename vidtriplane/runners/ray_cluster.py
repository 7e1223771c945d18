"""Connecting to Ray for the Ray runner: join a cluster or start one here, and keep Ctrl-C and SIGTERM ours.

    started = connect(ray, RayOptions(address="auto"))   # True: started here (the caller shuts it down)

An address that does not answer is one clear error at once (Ray itself retries for minutes). Ray's core
replaces the process's SIGINT/SIGTERM handlers and turns a ``SystemExit`` raised while it waits into
``SystemExit(1)``; the command's handlers are put back, and :func:`exit_code_of` gives the signal's exit
code back, so a Ray run stops like a local one (130 / 143).
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
from typing import Any, Optional

from vidtriplane.errors import VidtriplaneError
from vidtriplane.runners.engine import RayOptions


class ClusterUnavailable(VidtriplaneError):
    """The Ray cluster could not be joined or started."""


def connect(ray, options: RayOptions) -> bool:
    """Join the cluster at ``options.address`` / ``$RAY_ADDRESS``, or start Ray here; True if started here."""
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:  # a local cluster with room for the workers asked for
        kwargs["num_cpus"] = max(os.cpu_count() or 1, math.ceil(options.workers * options.cpus_per_worker))
    else:
        _check_reachable(address)
    handlers = _signal_handlers()
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ClusterUnavailable(f"cannot use {where}: {exc}") from None
    for signum, handler in handlers.items():  # Ray's core replaces them; Ctrl-C and SIGTERM must stop us cleanly
        signal.signal(signum, handler if handler == signal.SIG_IGN else _noting(handler))
    return True


_SIGNALS: list[int] = []
"""Signals received while Ray ran: Ray turns a SystemExit raised in ``ray.wait`` into ``SystemExit(1)``."""


def _signal_handlers() -> dict:
    """This process's Python handlers of SIGINT and SIGTERM (main thread only; others cannot set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    return {signum: handler for signum, handler in handlers.items() if handler is not None}


def _noting(handler):
    """``handler``, after noting the signal (see :data:`_SIGNALS`)."""
    def on_signal(signum, frame):
        _SIGNALS.append(signum)
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
    return on_signal


def _check_reachable(address: str) -> None:
    """A HOST:PORT that does not answer is one clear error now (Ray itself keeps retrying for minutes)."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # auto, local, ray:// (Ray's client): left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ClusterUnavailable(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it "
                                 "with `ray start --head` there, or leave out --address to start Ray here") from None


def exit_code_of(exc: SystemExit) -> Optional[int]:
    """The exit code of the last signal received while Ray ran, when ``exc`` lost it (else None)."""
    if _SIGNALS and exc.code != 128 + _SIGNALS[-1]:
        return 128 + _SIGNALS[-1]
    return None
