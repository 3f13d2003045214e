"""Secrets become *** in messages; a short one only as a whole word, so hints stay readable."""

from __future__ import annotations

from mailrules.redact import redact


def test_long_secrets_are_replaced_anywhere() -> None:
    assert redact("LOGIN failed for hunter2secret at x", ["hunter2secret"]) == "LOGIN failed for *** at x"
    assert redact("abcXsecretpassY", ["secretpass"]) == "abcX***Y"


def test_short_secrets_only_as_whole_words() -> None:
    hint = 'use tls = "implicit" (port 993); only on loopback, set allow_insecure = true'
    assert redact(hint, ["p"]) == hint
    assert redact("password p rejected", ["p"]) == "password *** rejected"


def test_longest_first_and_empty_ignored() -> None:
    assert redact("aGVsbG8= hello", ["hello", "aGVsbG8=", ""]) == "*** ***"
