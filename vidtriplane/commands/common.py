"""What every command shares at run time: logging to stderr and turning errors into one line.

stdout may carry video, so every message goes to stderr as ``vidtriplane: LEVEL: message``. Errors:

* a :class:`~vidtriplane.errors.VidtriplaneError` (bad input, config, weights, output): its message in one
  line, exit code 2 (usage) or 1 (runtime); the traceback only with ``-v``;
* Ctrl-C / SIGINT: exit 130; SIGTERM: exit 143 (files in progress are discarded, never left under a final
  name); the reader of our stdout going away: exit 141 quietly (like any Unix filter);
* Click's errors (bad or missing options): one line naming the command's ``--help``, exit 2;
* anything else is a bug: one line saying so, the traceback with ``-v``, exit 1.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback

import click

log = logging.getLogger("vidtriplane")

EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_SIGPIPE = 141
_state = {"verbose": False}


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Route every log line to stderr; ``quiet`` keeps warnings only, ``verbose`` adds debug lines and
    tracebacks on errors."""
    _state["verbose"] = verbose
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vidtriplane: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("libav", "PIL", "matplotlib", "urllib3", "numba", "filelock", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR if noisy == "libav" else logging.WARNING)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """SIGTERM -> SystemExit(143) in the main thread, so that ``finally`` blocks discard partial files."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that flushing a closed pipe at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _say(message: str) -> None:
    click.echo(f"vidtriplane: error: {message}", err=True)


def say_click_error(exc: click.exceptions.ClickException) -> int:
    """Click's own errors (a bad option value, a missing option) as one line, like ours; the exit code."""
    message = exc.format_message()
    if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # a bare group: its help, as Click does
        click.echo(message, err=True)
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.exceptions.UsageError) and ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    _say(message)
    return exc.exit_code


def on_exit(exc: SystemExit) -> None:
    """Say why when SIGTERM ended the command (SIGINT is said by :func:`handle`)."""
    if exc.code == EXIT_SIGTERM:
        _say("terminated; unfinished outputs were discarded")


def handle(exc: BaseException) -> int:
    """The exit code for an exception escaping a command, after telling the user (see the docstring)."""
    from vidtriplane.errors import VidtriplaneError

    if isinstance(exc, KeyboardInterrupt):
        _say("interrupted; unfinished outputs were discarded")
        return EXIT_SIGINT
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        log.info("the program reading stdout closed the pipe; stopping")
        return EXIT_SIGPIPE
    if _state["verbose"]:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, VidtriplaneError):
        _say(str(exc))
        return exc.exit_code
    first = str(exc).splitlines()[0] if str(exc) else ""
    _say(f"unexpected {type(exc).__name__}: {first}. This is a bug in vidtriplane"
         + ("" if _state["verbose"] else "; run again with -v for the traceback and report it"))
    return 1
