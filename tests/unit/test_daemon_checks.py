"""The daemon's check at start (daemon/checks.py): every account with work connected once, a bounded
number at a time; an account that cannot be reached is logged and left out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import cast

import pytest

from mailrules.accounts import Account
from mailrules.daemon.checks import check_servers
from mailrules.errors import MailrulesError
from mailrules.imap.names import Namespaces


class FakeAccount:
    """Counts the connections open at once; `fails` refuses to connect; `gmail` has special uses."""

    open_now = 0
    most = 0
    guard = threading.Condition()

    def __init__(self, name: str, *, fails: bool = False, gmail: bool = False, overlap: bool = True) -> None:
        self.name, self.fails, self.gmail, self.overlap = name, fails, gmail, overlap

    @contextmanager
    def open(self) -> Iterator[SimpleNamespace]:
        if self.fails:
            raise MailrulesError(f"{self.name}: connection refused")
        with FakeAccount.guard:
            FakeAccount.open_now += 1
            FakeAccount.most = max(FakeAccount.most, FakeAccount.open_now)
            FakeAccount.guard.notify_all()
            # the first connection waits for a second one (serial checks never see it: most == 1)
            if self.overlap:
                FakeAccount.guard.wait_for(lambda: FakeAccount.most > 1, timeout=10)
        try:
            store = SimpleNamespace(
                dialect=SimpleNamespace(gmail=self.gmail), special_use=lambda: {"\\All": "[Gmail]/All Mail"}
            )
            yield SimpleNamespace(namespaces=Namespaces(f"{self.name}.", "."), store=store)
        finally:
            with FakeAccount.guard:
                FakeAccount.open_now -= 1


def test_every_account_is_checked_a_bounded_number_at_a_time(caplog: pytest.LogCaptureFixture) -> None:
    FakeAccount.most = 0
    fakes = {f"a{i}": FakeAccount(f"a{i}") for i in range(20)}
    fakes["down"] = FakeAccount("down", fails=True)
    fakes["g"] = FakeAccount("g", gmail=True)
    namespaces, special = check_servers(cast(dict[str, Account], fakes), at_once=4)
    assert sorted(namespaces) == sorted(n for n in fakes if n != "down")
    assert namespaces["a3"] == Namespaces("a3.", ".")
    assert special == {"g": {"\\All": "[Gmail]/All Mail"}}
    assert 1 < FakeAccount.most <= 4  # concurrent, never more than the bound
    assert "account down: mailbox names not checked at start" in caplog.text


def test_one_account_is_checked_on_the_calling_thread() -> None:
    seen: list[str] = []

    class Here(FakeAccount):
        @contextmanager
        def open(self) -> Iterator[SimpleNamespace]:
            seen.append(threading.current_thread().name)
            with super().open() as conn:
                yield conn

    namespaces, _ = check_servers(cast(dict[str, Account], {"only": Here("only", overlap=False)}))
    assert list(namespaces) == ["only"] and seen == [threading.current_thread().name]
