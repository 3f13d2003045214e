"""FusedParser: Lark's LALR tables driven by one loop of ours, with the lexer's scan inside it.

Parsing 10,000 rules spends a third of its time in Lark's parser loop and the wrappers it puts
around each callback (a child filter, a single-child expander, our span closure: four Python
calls per reduction), and a generator step per token. This loop reads the same tables (built by
Lark from grammar/mailrules.lark), scans with FastLexer's pattern and keyword decisions, and
runs one precomputed reducer per grammar rule: the children Lark would give the callback (the
same filtering of `_rule` and `x*` helpers, the same `?rule` single-child expansion), then the
AstBuilder's method. A `?rule` of one child is a plain state change (the value stays).

It only handles text without a syntax error: at the first token the tables do not accept, or a
character no token starts with, `parse` returns None and the caller parses the text with Lark,
whose errors we report (parser.parse_text). A grammar or Lark option this loop does not know
(placeholders, lexer callbacks, an action other than shift or reduce) makes `build` return None:
Lark parses everything, as before.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from typing import Any

from lark import Lark, Token
from lark.parsers.lalr_analysis import Shift

from mailrules.dsl.lexer import FastLexer
from mailrules.dsl.slots import new_span

__all__ = ["FusedParser"]

_new_str = str.__new__
Reducer = tuple[int, Callable[[list[Any]], Any] | None, dict[Any, Any]]


def _reducer_body(rule: Any, call: bool, spanless: bool) -> str | None:
    """Python source of the body of `r(v)`: the value of a reduction from the values `v` it pops,
    as Lark's parse-tree builder makes it. Its ChildFilter keeps the children (a filtered-out
    anonymous token dropped, a `_rule` or Lark's `__x_star_N` helper replaced by its own children,
    the first such list extended in place as Lark does for left recursion); a `?rule` gives its
    only child itself; then, when `call`, the builder's method `m` with the children's span (None
    when `spanless`), else the children (no method: a `_rule`, whose children its parent takes).
    None for a `?rule` of one kept child: its value is that child's, nothing to run.

    The source names only `v`, `ch`, `f`, `l` and the names the caller binds; the numbers are
    positions in the grammar rule."""
    keep_all = rule.options.keep_all_tokens
    include: list[tuple[int, bool, bool]] = []  # (position, expanded, a terminal)
    for i, sym in enumerate(rule.expansion):
        if keep_all or not (sym.is_term and sym.filter_out):
            include.append((i, not sym.is_term and sym.name.startswith("_"), sym.is_term))
    as_is = len(include) == len(rule.expansion) and not any(expanded for _, expanded, _ in include)
    expand1 = rule.options.expand1 and not rule.alias
    if expand1 and len(rule.expansion) == 1 and as_is:
        return None
    if as_is:
        lines = ["ch = v"]
    elif include and include[0][1]:
        lines = [f"ch = v[{include[0][0]}]"]
        lines += [f"ch += v[{i}]" if ex else f"ch.append(v[{i}])" for i, ex, _ in include[1:]]
    else:
        lines = ["ch = [" + ", ".join(f"*v[{i}]" if ex else f"v[{i}]" for i, ex, _ in include) + "]"]
    if expand1:
        lines.append("if len(ch) == 1:\n    return ch[0]")
    if not call:
        lines.append("return ch")
    elif spanless:
        lines.append("return m(None, ch)")
    elif include and include[0][2] and include[-1][2]:
        # first and last child are tokens: the span from their positions (BuilderBase.span_at)
        lines.append(f"f = v[{include[0][0]}]\nl = v[{include[-1][0]}]")
        lines.append("return m(mk(b.path, f.line + b.off, f.column, l.end_line + b.off, l.end_column), ch)")
    else:
        lines.append("return m(span_at(ch), ch)")
    return "\n".join(lines)


def _reducers(bodies: list[str | None], methods: list[Any], env: dict[str, Any]) -> list[Any]:
    """The function of each body (None for None), bound to its method: one factory per distinct
    body (the grammar's 152 rules have 25), compiled at once (compiling one per rule took ~10 ms)."""
    shapes: dict[str, int] = {}
    for body in bodies:
        if body is not None and body not in shapes:
            shapes[body] = len(shapes)
    source = "".join(
        f"def s{j}(m):\n    def r(v):\n"
        + "".join(f"        {line}\n" for line in body.splitlines())
        + "    return r\n"
        for body, j in shapes.items()
    )
    exec(compile(source, "<mailrules.dsl.lalr reducers>", "exec"), env)  # our own source: _reducer_body
    out: list[Any] = []
    for body, method in zip(bodies, methods, strict=True):
        if body is None:
            out.append(None)
        elif body == "ch = v\nreturn m(None, ch)":
            out.append(functools.partial(method, None))  # no Python frame of ours at all
        else:
            out.append(env[f"s{shapes[body]}"](method))
    return out


def _keywords_at(lexer: FastLexer, acts: dict[str, Any]) -> dict[str, str]:
    """What each keyword is in a state whose actions are `acts`, as FastLexer.lex decides it: the
    keyword where the state takes it, else a WORD where it takes one and the word is not reserved,
    else the keyword (the error names it). A word that is no keyword is a WORD everywhere."""
    out: dict[str, str] = {}
    for low, keyword in lexer.keywords.items():
        if keyword not in acts and "WORD" in acts and low not in lexer.reserved:
            out[low] = "WORD"
        else:
            out[low] = keyword
    return out


class FusedParser:
    """One parse of a whole text: the items, or None at the first syntax error (see the module)."""

    def __init__(self, lexer: FastLexer, table: Any, actions: dict[Any, dict[str, Any]]) -> None:
        self.lexer = lexer
        self.start_state = table.start_states["start"]
        self.end_state = table.end_states["start"]
        #: state -> terminal -> the next state (a shift) or a reducer (size, function, gotos)
        self.actions = actions
        #: state -> keyword (lower case) -> the terminal a word is there (any other word: WORD)
        self.words = {state: _keywords_at(lexer, acts) for state, acts in actions.items()}
        #: The class of a token by its first character, where only one class can start with it:
        #: a letter only WORD (the first class, `[A-Za-z]...`), `"` only STRING, a punctuation
        #: character only PUNCT (none of the classes before it can start so). Any other token
        #: is matched again with FastLexer's named groups.
        self.first = dict.fromkeys(string.ascii_letters, "WORD")
        self.first.update((p, "PUNCT") for p in lexer.punct if len(p) == 1)
        self.first['"'] = "STRING"

    @classmethod
    def build(
        cls, parser: Lark, builder: Any, methods: Callable[[str], tuple[Any, bool] | None]
    ) -> FusedParser | None:
        """The fused parser of a Lark LALR parser built with `lexer=FastLexer`, calling the
        builder's methods (`methods(name)`: the bound method and whether it reads no span, or
        None) as Lark's inline transformer would, or None when the parser has anything this loop
        does not reproduce."""
        try:
            return cls._build(parser, builder, methods)
        except (AttributeError, KeyError, TypeError, ValueError, SyntaxError):
            return None

    @classmethod
    def _build(
        cls, parser: Lark, builder: Any, methods: Callable[[str], tuple[Any, bool] | None]
    ) -> FusedParser | None:
        options = parser.options
        if options.parser != "lalr" or options.propagate_positions or options.lexer_callbacks:
            return None
        lexer = parser.parser.lexer
        if not isinstance(lexer, FastLexer):
            return None
        table = parser.parser.parser.parser.parse_table
        gotos: dict[str, dict[Any, Any]] = {}
        for state, acts in table.states.items():
            for name, (action, arg) in acts.items():
                if action is Shift and name not in lexer.terminal_names:
                    gotos.setdefault(name, {})[state] = arg
        bodies: list[str | None] = []
        bound: list[Any] = []
        for rule in parser.rules:
            if rule.options.empty_indices:  # `[x]` placeholders: not reproduced here
                return None
            name = rule.alias or rule.options.template_source or rule.origin.name
            found = methods(name)
            body = _reducer_body(rule, found is not None, found is not None and found[1])
            if found is None and body is not None and not name.startswith("_"):
                return None  # Lark would make a Tree: not reproduced here
            bodies.append(body)
            bound.append(found[0] if found is not None else None)
        env: dict[str, Any] = {"mk": new_span, "b": builder, "span_at": builder.span_at}
        functions = _reducers(bodies, bound, env)
        reducers: dict[Any, Reducer] = {}
        for rule, function in zip(parser.rules, functions, strict=True):
            reducers[rule] = (len(rule.expansion), function, gotos.get(rule.origin.name, {}))
        actions: dict[Any, dict[str, Any]] = {}
        for state, acts in table.states.items():
            out: dict[str, Any] = {}
            for name, (action, arg) in acts.items():
                if name not in lexer.terminal_names and name != "$END":
                    continue
                out[name] = arg if action is Shift else reducers[arg]
                if action is Shift and type(arg) is not int:
                    return None
            actions[state] = out
        return cls(lexer, table, actions)

    def parse(self, text: str) -> Any:
        """The value of the start rule for `text`, or None at a syntax error."""
        lexer = self.lexer
        punct, words = lexer.punct, self.words
        table = self.actions
        line, line_start, pos, end = 1, 0, 0, len(text)
        state = self.start_state
        states: list[Any] = [state]
        values: list[Any] = []
        acts = table[state]
        first, named = self.first, lexer.scanner.match
        for found in lexer.plain_scanner.findall(text):
            skipped, value = found[0], found[1]
            start = pos + len(skipped)
            if "\n" in skipped:
                line += skipped.count("\n")
                line_start = pos + skipped.rfind("\n") + 1
            if not value:  # white space or comments only: the end, or a stray character
                if start >= end:
                    break
                return None
            pos = start + len(value)
            kind = first.get(value[0])
            if kind is None:  # a digit, `/`, `<`, `>`: the class as FastLexer's scan finds it there
                m = named(text, start)
                kind = m.lastgroup if m is not None else None
                if kind is None:  # pragma: no cover - the same classes matched this token
                    return None
            if kind == "WORD":  # a keyword or a WORD: FastLexer.lex's decision, made for each state
                kind = words[state].get(value.lower(), "WORD")
            elif kind == "PUNCT":
                kind = punct[value]
            elif kind == "NUMBER" and "." not in value and ("INT" in acts or "NUMBER" not in acts):
                kind = "INT"
            tok = _new_str(Token, value)
            tok.type = kind
            tok.start_pos = start
            tok.value = value
            tok.line = tok.end_line = line
            tok.column = col = start - line_start + 1
            tok.end_column = col + len(value)
            tok.end_pos = pos
            while True:
                act = acts.get(kind)
                if act is None:
                    return None
                if type(act) is int:
                    states.append(act)
                    values.append(tok)
                    state = act
                    acts = table[act]
                    break
                size, reduce, goto = act
                if reduce is None:  # a `?rule` of one child: the value stays
                    del states[-1]
                elif size:
                    children = values[-size:]
                    del values[-size:]
                    del states[-size:]
                    values.append(reduce(children))
                else:
                    values.append(reduce([]))
                state = goto[states[-1]]
                states.append(state)
                acts = table[state]
        end_state = self.end_state
        while True:
            act = acts.get("$END")
            if act is None or type(act) is int:
                return None
            size, reduce, goto = act
            if reduce is None:
                del states[-1]
            else:
                children = values[-size:] if size else []
                if size:
                    del values[-size:]
                    del states[-size:]
                values.append(reduce(children))
            state = goto.get(states[-1])
            if state is None:
                return None
            if state == end_state:
                return values[-1]
            states.append(state)
            acts = table[state]
