"""The planner: rule conditions become IMAP SEARCH keys for the server plus an exact client-side residual."""

from __future__ import annotations

from mailrules.compile.dialect import Dialect
from mailrules.compile.explain import explain_condition, explain_plan, format_search
from mailrules.compile.needs import FetchNeeds
from mailrules.compile.plan import ConditionPlan, plan_condition, plan_rule
from mailrules.compile.serialize import (
    Lit,
    SearchKeyError,
    chunk_uid_sets,
    compress_uids,
    needs_charset,
    render,
    serialize,
)

__all__ = [
    "ConditionPlan",
    "Dialect",
    "FetchNeeds",
    "Lit",
    "SearchKeyError",
    "chunk_uid_sets",
    "compress_uids",
    "explain_condition",
    "explain_plan",
    "format_search",
    "needs_charset",
    "plan_condition",
    "plan_rule",
    "render",
    "serialize",
]
