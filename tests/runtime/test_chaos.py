"""Chaos, short version (issue 18): a two-process graph (producer -> writer with a
journaled MemorySystem) streams for a few seconds under supervision while random
processes are SIGKILLed, SIGSTOPped/SIGCONTed, fed garbage frames and made to face a
subscriber that never reads. Nothing committed is lost, every kill is recovered from,
memory stays bounded. The long version is ``bench/chaos.py``."""

from __future__ import annotations

from bench.chaos import run_chaos


def test_chaos_loses_nothing_committed_and_every_kill_recovers() -> None:
    r = run_chaos(7.0, seed=3)
    assert r["kills"] >= 1 and sum(r["actions"].values()) >= 5, r["actions"]
    assert r["committed"] > 50, r
    assert r["lost_committed"] == 0, r["lost_examples"]
    assert r["all_recovered"], (r["kills"], r["kills_recovered"], r["recovery_s"])
    assert sum(r["restarts"].values()) >= r["kills"]
    for name, peak in r["rss_mb_peak"].items():  # bounded: no growth beyond a margin
        assert peak < r["rss_mb_first"][name] + 200, (name, r["rss_mb_first"], peak)
