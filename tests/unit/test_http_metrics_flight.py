"""/metrics under piled-up requests (daemon/http.py, SharedExposition): one generation at a time,
the requests meanwhile sharing it, at most half the connections waiting for it, and /healthz and
/readyz answered while a generation is in flight. A collector that blocks on an event stands for
a replica with thousands of watcher threads (0.5-0.9 s per generation in cluster_bench)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from mailrules.daemon.http import MetricsServer, SharedExposition
from mailrules.daemon.metrics import Metrics
from tests.waiting import WAIT, until


class SlowCollector:
    """Each collection waits for `release`; `calls` counts them, `entered` is set by each."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def describe(self) -> Iterable[Metric]:
        return []  # (no collection at registration)

    def collect(self) -> Iterable[Metric]:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(WAIT)
        yield GaugeMetricFamily("mailrules_test_generation", "which generation", value=self.calls)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def slow() -> Iterator[tuple[MetricsServer, SlowCollector]]:
    metrics = Metrics()
    collector = SlowCollector()
    metrics.registry.register(collector)
    server = MetricsServer("127.0.0.1:0", metrics, lambda: (True, ""))
    server.start()
    try:
        yield server, collector
    finally:
        collector.release.set()
        server.stop()


def wave(server: MetricsServer, n: int) -> tuple[list[tuple[int, bytes]], list[threading.Thread]]:
    answers: list[tuple[int, bytes]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(get(f"{server.url}/metrics"))) for _ in range(n)
    ]
    for t in threads:
        t.start()
    return answers, threads


def test_concurrent_scrapes_share_one_generation_and_health_answers_meanwhile(
    slow: tuple[MetricsServer, SlowCollector],
) -> None:
    server, collector = slow
    for generation in (1, 2):
        collector.entered.clear()
        collector.release.clear()
        shared_before = server.exposition.shared
        answers, threads = wave(server, 10)
        assert collector.entered.wait(WAIT)
        assert until(lambda: server.exposition.shared == shared_before + 9)  # noqa: B023  # all ten in: one generating
        # the generation is blocked: the health checks do not wait for it
        assert get(f"{server.url}/healthz") == (200, b"ok\n")
        assert get(f"{server.url}/readyz") == (200, b"ready\n")
        collector.release.set()
        for t in threads:
            t.join(WAIT)
        assert len(answers) == 10 and {status for status, _ in answers} == {200}
        assert len({body for _, body in answers}) == 1  # the same exposition for all ten
        assert f"mailrules_test_generation {generation}.0".encode() in answers[0][1]
        assert collector.calls == generation and server.exposition.generations == generation


def test_at_most_half_the_connections_wait_for_the_metrics() -> None:
    metrics = Metrics()
    collector = SlowCollector()
    metrics.registry.register(collector)
    server = MetricsServer("127.0.0.1:0", metrics, lambda: (True, ""), max_connections=4)
    server.start()
    try:
        assert server.max_metrics == 2
        answers, threads = wave(server, 2)
        assert collector.entered.wait(WAIT) and until(lambda: server.exposition.shared == 1)
        assert get(f"{server.url}/metrics") == (503, b"busy\n")  # a third: refused at once
        assert (
            metrics.registry.get_sample_value("mailrules_http_connections_dropped_total", {"reason": "limit"})
            == 1
        )
        assert get(f"{server.url}/healthz") == (200, b"ok\n")  # the other half is the health checks'
        collector.release.set()
        for t in threads:
            t.join(WAIT)
        assert sorted(status for status, _ in answers) == [200, 200] and collector.calls == 1
    finally:
        collector.release.set()
        server.stop()


def test_a_failed_generation_fails_every_request_sharing_it_and_the_next_one_generates_again() -> None:
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def generate() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            assert release.wait(WAIT)
            raise OSError("cannot read /proc")
        return b"ok"

    exposition = SharedExposition(generate)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            exposition.get(WAIT)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    assert entered.wait(WAIT) and until(lambda: exposition.shared == 2)
    release.set()
    for t in threads:
        t.join(WAIT)
    assert sorted(type(e).__name__ for e in errors) == ["OSError", "RuntimeError", "RuntimeError"]
    assert exposition.get(WAIT) == b"ok" and len(calls) == 2 and exposition.generations == 2


def test_a_request_waiting_past_its_deadline_times_out_without_a_generation_of_its_own() -> None:
    entered, release = threading.Event(), threading.Event()

    def generate() -> bytes:
        entered.set()
        assert release.wait(WAIT)
        return b"late"

    exposition = SharedExposition(generate)
    leader = threading.Thread(target=exposition.get, args=(WAIT,))
    leader.start()
    assert entered.wait(WAIT)
    with pytest.raises(TimeoutError):
        exposition.get(0.0)
    release.set()
    leader.join(WAIT)
    assert exposition.generations == 1 and exposition.shared == 1
