"""The one TLS policy for IMAP and SMTP: verify chain and hostname; `ca_file` adds a trust anchor."""

from __future__ import annotations

import os
import re
import ssl
from functools import lru_cache

#: A file name OpenSSL looks a CA up by: the subject's hash, a dot, a number (`c_rehash`).
_HASH_LINK = re.compile(r"[0-9a-f]{8}\.[0-9]+\Z")


@lru_cache(maxsize=32)
def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying context (hostname + chain); `ca_file` is trusted in addition to the system store,
    as config.md says ("optional extra trust anchor").

    One context per CA file, shared by every connection: each context that loads the system
    store's bundle holds its own copy of it (about 0.8 MB), which made a daemon with 1,000 IDLE
    connections use 1 GB (bench/scale_bench.py). A client-side SSLContext is safe to share
    between threads. Where the system store is also a hashed directory (`system_capath`), the
    context reads it through that directory: OpenSSL then loads only the CAs a handshake asks
    for, instead of parsing every certificate of the bundle (~30 ms at each process start).
    """
    capath = system_capath()
    ctx = ssl.create_default_context(capath=capath) if capath else ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def system_capath() -> str | None:
    """The system store's hashed directory when it holds the same CAs as the bundle OpenSSL would
    load, else None (the bundle is loaded as usual).

    Debian, Ubuntu and Alpine write both from the same certificates (update-ca-certificates):
    the bundle lies in the hashed directory. A bundle elsewhere (another distribution's layout, or
    `SSL_CERT_FILE` naming one's own) is read as it is; so is a directory without hash links.
    """
    paths = ssl.get_default_verify_paths()
    capath = paths.capath
    if not capath or not os.path.isdir(capath):
        return None
    if paths.cafile and os.path.dirname(os.path.realpath(paths.cafile)) != os.path.realpath(capath):
        return None
    try:
        with os.scandir(capath) as entries:
            if not any(_HASH_LINK.match(entry.name) for entry in entries):
                return None
    except OSError:
        return None
    return capath
