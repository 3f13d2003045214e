"""How the command line's process ends: after its output is written, without Python's teardown."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

__all__ = ["finish", "whole_process"]

#: Set by `whole_process()` from the installed `mailrules` command and `python -m mailrules` only:
#: a test runner calling the click group keeps its process.
_whole_process = False


def whole_process(main: Callable[[], object]) -> Callable[[], None]:
    """`main` for a process that runs one command and ends with it: `finish` may leave it early."""

    def entry() -> None:
        global _whole_process
        _whole_process = True
        main()

    return entry


def finish(code: int) -> NoReturn:
    """Exit with `code` once everything is written.

    In a process of its own with no other non-daemon thread left, stdout and stderr are flushed
    and the logs' handlers flushed and closed, then the process leaves with os._exit: Python's
    teardown (freeing a large rule set object by object, the final collections) took 0.25 s of
    `mailrules check` for 10,000 rules, and there is nothing else to do (the state store is closed
    by its `with` block before this is called). Anything unusual (a flush that fails, a thread
    still running, a test runner) takes the ordinary way out, sys.exit.
    """
    if _whole_process and all(t.daemon or t is threading.main_thread() for t in threading.enumerate()):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
