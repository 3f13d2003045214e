"""One way to keep secrets out of messages: replace them with `***` wherever they appear."""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Shorter secrets are replaced only as whole tokens: a one-letter test password must not turn
#: every "p" of a hint into "***" (it did: "im***licit", "loo***back").
WHOLE_WORD_BELOW = 6


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (longest first) replaced by `***`."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= WHOLE_WORD_BELOW:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text
