"""The one TLS policy for IMAP and SMTP: verify chain and hostname; `ca_file` adds a trust anchor."""

from __future__ import annotations

import ssl


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying context (hostname + chain); `ca_file` is trusted in addition to the system store,
    as config.md says ("optional extra trust anchor")."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx
