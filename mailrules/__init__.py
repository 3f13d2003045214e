"""mailrules: rules for your mailboxes, compiled into IMAP SEARCH and run on arrival or on schedule."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
