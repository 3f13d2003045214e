"""How the command line's process ends: after its output is written, without Python's teardown."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from mailrules import classcache

__all__ = ["RUN_GC_THRESHOLD", "finish", "run_collector", "whole_process"]

#: Set by `whole_process()` from the installed `mailrules` command and `python -m mailrules` only:
#: a test runner calling the click group keeps its process.
_whole_process = False


def whole_process(main: Callable[[], object]) -> Callable[[], None]:
    """`main` for a process that runs one command and ends with it: `finish` may leave it early.
    The dataclasses' generated methods come compiled from the cache directory (classcache.py)."""

    def entry() -> None:
        global _whole_process
        _whole_process = True
        classcache.install()
        try:
            main()
        finally:  # click ends every command with SystemExit
            classcache.save()

    return entry


#: New container objects between two collections of the cyclic collector's youngest generation in
#: a `mailrules run` process of its own (CPython's default: 700).
RUN_GC_THRESHOLD = 10_000


def run_collector() -> None:
    """Before a `run`'s walk, in a process of its own: the young generation collected every
    RUN_GC_THRESHOLD new objects. At 700, 655 collections were 4% of a 20,000-message run's
    instructions (bench/README.md, "What remains"), traversing the views and entries a rule keeps
    until it is done; what a run makes is freed by reference counting, cycles are rare. The
    daemon and a test runner keep the default."""
    if _whole_process:
        gc.set_threshold(RUN_GC_THRESHOLD, *gc.get_threshold()[1:])


def finish(code: int) -> NoReturn:
    """Exit with `code` once everything is written.

    In a process of its own with no other non-daemon thread left, stdout and stderr are flushed
    and the logs' handlers flushed and closed, then the process leaves with os._exit: Python's
    teardown (freeing a large rule set object by object, the final collections) took 0.25 s of
    `mailrules check` for 10,000 rules, and there is nothing else to do (the state store is closed
    by its `with` block before this is called). Anything unusual (a flush that fails, a thread
    still running, a test runner) takes the ordinary way out, sys.exit. The dataclasses' methods
    compiled meanwhile are kept for the next start first (classcache.py).
    """
    classcache.save()
    if _whole_process and all(t.daemon or t is threading.main_thread() for t in threading.enumerate()):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
