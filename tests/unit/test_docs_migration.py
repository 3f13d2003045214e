"""Every mailrules example of the migration guide (docs/migration.md) parses and checks.

The guide translates imapfilter, Sieve, imapautofiler, gmailctl and afew configurations; their
configurations are fenced ```lua, ```sieve, ```yaml, ```jsonnet and ```ini, and every translation is
fenced ```rules. Those blocks must load without errors, exactly as `mailrules check` would load
them (warnings are allowed). The block reader and loader are the ones of test_docs_examples.
"""

from __future__ import annotations

import re

import pytest

from mailrules.source import render_all
from tests.unit.test_docs_examples import DOCS, Block, blocks, load

GUIDE = "migration.md"
ALL = blocks(GUIDE)
RULES = [b for b in ALL if b.tag == "rules"]
OTHER_TOOLS = ("lua", "sieve", "yaml", "jsonnet", "ini")


def test_the_guide_exists_and_has_enough_translations() -> None:
    assert (DOCS / GUIDE).exists()
    assert len(RULES) >= 15, f"only {len(RULES)} ```rules blocks in {GUIDE}"


def test_every_source_tool_is_shown() -> None:
    tags = {b.tag for b in ALL}
    missing = [t for t in OTHER_TOOLS if t not in tags]
    assert not missing, f"no ```{missing} example in {GUIDE}"


def test_rule_like_blocks_are_tagged() -> None:
    """An untagged block that starts like a rule file would escape the check below."""
    untagged = [
        b.id
        for b in ALL
        if b.tag == "" and re.match(r"\s*(#[^\n]*\n\s*)*(rule|test)\s+\"", b.text, re.IGNORECASE)
    ]
    assert not untagged, f"tag these blocks ```rules: {untagged}"


@pytest.mark.parametrize("block", RULES, ids=[b.id for b in RULES])
def test_translation_loads_without_errors(block: Block) -> None:
    rule_file, diags = load(block)
    errors = [d for d in diags if d.severity == "error"]
    assert not errors, render_all(errors, {block.id: block.text})
    assert rule_file is not None and (rule_file.rules or rule_file.tests), "the block holds no rule or test"
