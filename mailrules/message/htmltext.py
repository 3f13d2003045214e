"""HTML to searchable text in one linear pass: markup becomes a space, script/style/comments go.

Not `html.parser.HTMLParser`: it rescans its buffer on unterminated constructs (`"<a " * n`
takes 42 s at 64 KB, `"<!--" * n` 1.8 s; bench/hostile_bench.py), and not the old
`<[^>]*>`-style expressions either, which scan to the end again from every `<` that is never
closed. One expression, applied by a single `re.sub`, follows the HTML tokenizer (WHATWG HTML
§13.2.5) where it decides what is text:

- a `<` starts markup only before a letter, `/`, `!` or `?` (§13.2.5.6); any other `<` is text;
- a quoted attribute value may hold `>`; a quote starts one only right after `=`;
- `<!-->` and `<!--->` are empty comments, `--!>` also ends one; `<!x`, `<?x` and `</1` are
  bogus comments up to the next `>`;
- the content of `<script>` and `<style>` is not text; it ends at `</script` or `</style`
  followed by a space, `/` or `>`;
- a construct still open at the end of the input swallows the rest (a browser shows none of it).

Every repetition is possessive and every alternative starts with `<`, so each match reads its
characters once and an unterminated construct ends the scan instead of being retried: the time
is linear in the input, whatever it holds.
"""

from __future__ import annotations

import html
import re

__all__ = ["html_to_text"]

# The rest of a tag after its first letter, up to its `>` (or the end of the input): attribute
# names and unquoted values, and quoted values, which run to the end when unclosed.
_TAG_TAIL = r"""(?:[^>=]++|=[\t\n\f\r ]*+(?:"[^"]*+(?:"|\Z)|'[^']*+(?:'|\Z)|[^\t\n\f\r >]*+))*+(?:>|\Z)"""
_END = r"[\t\n\f\r />]"


def _raw_text(name: str) -> str:
    """A start tag whose content is raw text, the content, and its end tag if there is one."""
    return (
        rf"<(?i:{name})(?={_END}){_TAG_TAIL}"
        rf"(?:[^<]++|<(?!/(?i:{name}){_END}))*+"
        rf"(?:</(?i:{name}){_TAG_TAIL})?"
    )


_MARKUP = re.compile(
    "|".join(
        (
            r"<!--(?:-?>|(?:[^-]++|-(?!-!?>))*+--!?>|[\s\S]*+)",  # a comment
            _raw_text("script"),
            _raw_text("style"),
            rf"</?[A-Za-z]{_TAG_TAIL}",  # a start or end tag
            r"</>",  # ignored
            r"(?:<[!?]|</[^A-Za-z>])[^>]*+(?:>|\Z)",  # a bogus comment
        )
    )
)


def html_to_text(source: str) -> str:
    """The text of an HTML document: markup and comments become a space, the content of
    `<script>` and `<style>` is dropped, character references are decoded. Linear time."""
    return html.unescape(_MARKUP.sub(" ", source))
