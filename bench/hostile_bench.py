"""Benchmark (wall time): hostile messages before and after bounded evaluation (issue 9).

Prints, for each hostile input at n and 4n: the old regex-based HTML stripping, the standard
library's `html.parser.HTMLParser` fed in 8 KB pieces, and `mailrules.message.htmltext.html_to_text`;
the `text` field over many header fields (the old per-name scan against the index); whole
`MessageView` decodes of hostile messages; and a backtracking user regex under `re` against the
`regex` module stopped by a deadline. The growth column is t(4n) / t(n) over the two largest
sizes run: about 4 is linear, about 16 quadratic. A size is not run when the one before, times 16
(quadratic growth), would pass --budget seconds (marked `-`), so the old code's minutes at 1 MB
are not waited for.

    .venv/bin/python bench/hostile_bench.py             # 16 KB .. 1 MB, ~3 minutes
    .venv/bin/python bench/hostile_bench.py --budget 300
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailrules.bounds import Deadline, EvaluationTimeout, deadline_scope
from mailrules.dsl.userregex import compile_user_regex
from mailrules.message.htmltext import html_to_text
from mailrules.message.view import MessageView

KB = 1024
FRAGMENTS = ("<", "<!--", "<a ", "<a b='", "</", "<?", "a<b", "<a>", "<p>x", "&amp;", "<script>x</script>")

# The stripping mailrules used before (message.py until issue 9), kept here as the baseline.
_OLD_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_OLD_TAG = re.compile(r"<[^>]*>")


def old_strip(text: str) -> str:
    return html.unescape(_OLD_TAG.sub(" ", _OLD_DROP.sub(" ", text)))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_data(self, data: str) -> None:
        self.out.append(data)


def stdlib_parser(text: str) -> str:
    p = _Text()
    for i in range(0, len(text), 8 * KB):
        p.feed(text[i : i + 8 * KB])
    p.close()
    return " ".join(p.out)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def row(name: str, sizes: tuple[int, ...], run: Callable[[int], object], budget: float) -> str:
    cells: list[str] = []
    times: list[float] = []
    for size in sizes:
        if times and times[-1] * 16 > budget:
            cells.append(f"{'-':>9}")
            continue
        t = timed(lambda size=size: run(size))
        times.append(t)
        cells.append(f"{t:9.4f}")
    growth = f"{times[-1] / times[-2]:6.1f}" if len(times) > 1 and times[-2] > 0 else "     -"
    return f"  {name:<34}{''.join(cells)}  {growth}"


def html_section(budget: float) -> None:
    sizes = (16 * KB, 64 * KB, 256 * KB, 1024 * KB)
    print(f"HTML to text, seconds at {', '.join(f'{s // KB} KB' for s in sizes)}; growth over the last x4")
    for frag in FRAGMENTS:
        print(f"{frag!r} repeated")

        def text(size: int, frag: str = frag) -> str:
            return frag * (size // len(frag))

        print(row("old regexes (before)", sizes, lambda n: old_strip(text(n)), budget))
        print(row("html.parser.HTMLParser", sizes, lambda n: stdlib_parser(text(n)), budget))
        print(row("htmltext.html_to_text (after)", sizes, lambda n: html_to_text(text(n)), budget))


def _old_text(headers: list[tuple[str, str]]) -> str:
    # message.py's `text` before the index: every distinct name scanned the whole header list.
    lines: list[str] = []
    seen: set[str] = set()
    for name, _ in headers:
        if name in seen:
            continue
        seen.add(name)
        lines.extend(f"{name}: {v}" for n, v in headers if n == name)
    return "\n".join(lines)


def header_section(budget: float) -> None:
    counts = (2_500, 10_000, 20_000)
    print(f"\n`text` over N distinct header fields, seconds at N = {', '.join(map(str, counts))}")

    def raw(n: int) -> bytes:
        return b"".join(b"X-H%d: value %d\r\n" % (i, i) for i in range(n)) + b"\r\nbody\r\n"

    def old(n: int) -> object:
        return _old_text([(f"x-h{i}", f"value {i}") for i in range(n)])

    print(row("per-name scan (before)", counts, old, budget))

    def new(n: int) -> object:
        return MessageView(raw(n)).field_text("text")

    print(row("MessageView, indexed (after)", counts, new, budget))


def message_section() -> None:
    print("\nWhole hostile messages: MessageView field_text('text'), default caps (1 MiB / 4 MiB)")
    mb = 1024 * KB
    cases: dict[str, bytes] = {
        "1 MB of '<!--' in text/html": b"Content-Type: text/html\r\n\r\n" + b"<!--" * (mb // 4),
        "8 MB base64 text/plain": b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"word " * (8 * mb // 5)),
        "2,000 MIME parts": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"".join(b"--b\r\nContent-Type: text/html\r\n\r\n<p>part %d<a \r\n" % i for i in range(2000))
        + b"--b--\r\n",
        "one 4 MB line": b"Subject: x\r\n\r\n" + b"y" * (4 * mb),
        "20,000 header fields": b"".join(b"Received: from h%d\r\n" % i for i in range(20_000))
        + b"\r\nhi\r\n",
        "nested multipart, depth 200": b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(200)
        )
        + b"Content-Type: text/plain\r\n\r\ndeep\r\n",
    }
    for name, raw in cases.items():
        t = timed(lambda raw=raw: MessageView(raw).field_text("text"))
        print(f"  {name:<34}{t:9.4f}  ({len(raw) // KB} KB)")


def regex_section() -> None:
    print("\nA backtracking rule regex, /invoice.*total/s, on invoice-heavy text without 'total'")
    before = re.compile(r"invoice.*total", re.IGNORECASE | re.DOTALL)
    rx = compile_user_regex(r"invoice.*total", "s")
    assert rx is not None
    for size in (32 * KB, 128 * KB):
        text = "invoice " * (size // 8)
        t_re = timed(lambda text=text: before.search(text))

        def bounded(text: str = text) -> None:
            try:
                with deadline_scope(Deadline(2.0)):
                    rx.search(text)
            except EvaluationTimeout:
                pass

        t_rx = timed(bounded)
        print(f"  {size // KB:>4} KB   re (before): {t_re:8.3f} s   regex, 2 s deadline: {t_rx:8.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0, help="skip a size whose run would pass this")
    args = ap.parse_args()
    html_section(args.budget)
    header_section(args.budget)
    message_section()
    regex_section()


if __name__ == "__main__":
    main()
