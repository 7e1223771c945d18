"""The root of vidtriplane's errors: what the command line turns into one clear line.

Every error a user can cause (bad input, bad config, missing weights, an output that cannot be
written) is a :class:`VidtriplaneError` whose message says what is wrong and what to do. The CLI prints
that message without a traceback (the traceback only with ``-v``) and exits with ``exit_code``:
2 for usage mistakes (a wrong option, config key or preset), 1 for everything that went wrong while
running. Anything that is not a VidtriplaneError is a bug and is reported as one.

Subclasses keep a builtin base too (``ValueError``, ``RuntimeError``) so that library callers who catch
those keep working.
"""
from __future__ import annotations


class VidtriplaneError(Exception):
    """An error with a message meant for the user; see the module docstring."""

    exit_code = 1


class UsageError(VidtriplaneError):
    """The command was asked something it cannot do as written (exit code 2)."""

    exit_code = 2


class PlanError(UsageError):
    """INPUT/OUTPUT that cannot be run as given (exit code 2)."""
