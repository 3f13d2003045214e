"""The planner: rule conditions become IMAP SEARCH keys for the server plus an exact client-side residual."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailrules.compile.dialect import Dialect
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

if TYPE_CHECKING:
    from mailrules.compile.explain import explain_condition, explain_plan, format_search

#: Imported on first use: `mailrules run` and the daemon never explain (explain and unparse cost
#: ~10 ms of every start).
_EXPLAIN = frozenset({"explain_condition", "explain_plan", "format_search"})


def __getattr__(name: str) -> Any:
    if name in _EXPLAIN:
        from mailrules.compile import explain

        return getattr(explain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
