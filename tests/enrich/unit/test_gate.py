"""Per-registry rate limit and backoff (lookup.Gate) on a clock the test moves:
the timing rules exactly, without sleeping."""
import pytest

from services.enrich.lookup import Gate, LookupFailed


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def gate(clock, **kw) -> Gate:
    options = dict(rate=2.0, burst=2, backoff_base=2.0, backoff_max=60.0, max_wait=1.0)
    options.update(kw)
    return Gate(clock=clock, sleep=clock.sleep, **options)


def test_burst_then_rate():
    clock = Clock()
    g = gate(clock)
    for _ in range(4):
        g.acquire("rdap:ripe", deadline=clock.now + 10)
    assert clock.slept == [0.5, 0.5]  # two at once, then one per 1/rate seconds
    g.acquire("rdap:arin", deadline=clock.now + 10)  # another registry has its own bucket
    assert clock.slept == [0.5, 0.5]


def test_wait_longer_than_max_wait_or_deadline_fails_fast():
    clock = Clock()
    g = gate(clock, rate=0.5, burst=1)
    g.acquire("whois:ripe", deadline=clock.now + 10)
    with pytest.raises(LookupFailed, match=r"whois:ripe: rate limit \(next request in 2.0s\)"):
        g.acquire("whois:ripe", deadline=clock.now + 10)
    clock.now += 1.5
    with pytest.raises(LookupFailed, match="rate limit"):
        g.acquire("whois:ripe", deadline=clock.now + 0.2)  # 0.5 s needed, 0.2 s left
    g.acquire("whois:ripe", deadline=clock.now + 1)
    assert clock.slept == [0.5]


def test_backoff_grows_and_resets():
    clock = Clock()
    g = gate(clock, max_wait=100.0)
    assert [g.penalise("rdap:apnic") for _ in range(3)] == [2.0, 4.0, 8.0]
    with pytest.raises(LookupFailed, match=r"rdap:apnic: backing off for 8.0s more"):
        g.acquire("rdap:apnic", deadline=clock.now + 5)
    g.acquire("rdap:apnic", deadline=clock.now + 20)
    assert clock.slept == [8.0]
    g.success("rdap:apnic")
    assert g.penalise("rdap:apnic") == 2.0


def test_retry_after_is_honoured_and_capped():
    clock = Clock()
    g = gate(clock)
    assert g.penalise("rdap:arin", retry_after=0.25) == 0.25
    g.acquire("rdap:arin", deadline=clock.now + 5)
    assert clock.slept == [0.25]
    assert g.penalise("rdap:arin", retry_after=3600) == 60.0
    with pytest.raises(LookupFailed, match="backing off for 60.0s more"):
        g.acquire("rdap:arin", deadline=clock.now + 5)
