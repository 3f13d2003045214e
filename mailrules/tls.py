"""The one TLS policy for IMAP and SMTP: verify chain and hostname; `ca_file` adds a trust anchor."""

from __future__ import annotations

import ssl
from functools import lru_cache


@lru_cache(maxsize=32)
def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying context (hostname + chain); `ca_file` is trusted in addition to the system store,
    as config.md says ("optional extra trust anchor").

    One context per CA file, shared by every connection: each context holds its own copy of the
    system CA store (about 0.8 MB), which made a daemon with 1,000 IDLE connections use 1 GB
    (bench/scale_bench.py). A client-side SSLContext is safe to share between threads.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx
