"""Logging set-up for the command line and the daemon, and the escaping that keeps one record one line.

Mail is written by strangers: a Message-ID, a subject or a mailbox name rendered from them may
hold CR/LF (RFC 2047 encoded-words decode to anything), and a line break in a log line lets the
sender write a second, forged line. `printable()` escapes such characters in every value taken
from a message before it reaches a log line or the journal; the formatters are the second line of
defence for everything else (exception texts, tracebacks): the text format escapes control
characters and indents continuation lines, the JSON format escapes what `json` leaves raw.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import overload

#: Attributes a LogRecord always has; anything else was passed with `extra=` and is structured data.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

#: The bidirectional controls (Unicode TR 9): text shown in another order than stored ("Trojan
#: Source", CVE-2021-42574); U+061C, LRM and RLM included.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
#: Every character that can end, rewrite or disguise a line in a terminal or a log viewer: C0
#: (TAB, CR and LF included), DEL, C1 (NEL is a line break to some), U+2028/U+2029 (line and
#: paragraph separators) and the bidirectional controls.
UNSAFE: frozenset[str] = frozenset(
    [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)] + ["\u2028", "\u2029"]
) | frozenset(BIDI_CONTROLS)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


_ESCAPES = {ord(c): _escape(c) for c in UNSAFE}
#: The formatters keep the line breaks of multi-line texts (tracebacks, rule diagnostics): they
#: indent what follows them instead, so that no continuation line can pass for a record.
_ESCAPES_KEEP_LINES = {o: e for o, e in _ESCAPES.items() if chr(o) not in "\n\t"}
_JSON_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in UNSAFE}
CONTINUATION = "\n    "


@overload
def printable(value: str) -> str: ...
@overload
def printable(value: None) -> None: ...
def printable(value: str | None) -> str | None:
    """`value` with every unsafe character (see UNSAFE) written as `\\r`, `\\n`, `\\t`, `\\xNN` or
    `\\uNNNN`; other text, backslashes included, unchanged (so applying it twice changes nothing).

    Use it on every value that comes from a message before it reaches a log line or the journal.
    """
    if value is None or value.isprintable():  # the common case: nothing to do, no copy
        return value
    return value.translate(_ESCAPES)


def one_record(text: str) -> str:
    """A formatted record as it may be written: unsafe characters escaped except line breaks and
    tabs, and every line after the first indented (a record of several lines stays recognisable)."""
    if text.isprintable():
        return text
    return text.translate(_ESCAPES_KEEP_LINES).replace("\n", CONTINUATION)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`: every line that starts at the left margin starts a record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return one_record(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every `extra=` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # json escapes C0 only; DEL, C1, U+2028/U+2029 and the bidi controls can appear only inside
        # strings, where \uNNNN is valid JSON and reads back as the same character.
        return json.dumps(out, default=str, ensure_ascii=False).translate(_JSON_ESCAPES)


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr in `fmt` ("text" or "json"); imapclient's wire log stays off (it logs bodies)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # imapclient logs every command line, literals included, at DEBUG: never let bodies reach logs.
    logging.getLogger("imapclient").setLevel(logging.INFO)
