"""The only package that imports imapclient: sessions, mailbox commands, error classification."""

from __future__ import annotations

from mailrules.imap.commands import MailboxInfo, SelectInfo
from mailrules.imap.errors import classify
from mailrules.imap.session import ConnectionParams, ImapSession

__all__ = ["ConnectionParams", "ImapSession", "MailboxInfo", "SelectInfo", "classify"]
