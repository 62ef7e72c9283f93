"""Soak: 1,000 real live cycles against the local venue with seeded faults (tests/soak.py), the trader in its own
process and replaced midway by a new one built from the same state store while the venue restarts. At the end the store
equals the venue (one venue order per intent, every venue trade recorded once, positions and cash equal the balances),
and the trader's resident memory grew less than 5 % after its warm-up. bench/bench_soak.py runs 10,000 cycles."""

from __future__ import annotations

import os

import pytest
from soak import run_soak

CYCLES = int(os.environ.get("SOAK_CYCLES", 1_000))
WARM_UP = 100  # cycles of each trader process before its memory is the baseline


def growth_after_warm_up(rss, warm_up: int) -> dict[int, float]:
    "Per trader process: the largest VmRSS after its first `warm_up` cycles relative to VmRSS then."
    out = {}
    for process in sorted({p for p, _, _ in rss}):
        samples = [(n, kb) for p, n, kb in rss if p == process]
        start = samples[0][0]
        base = [kb for n, kb in samples if n - start >= warm_up]
        if len(base) >= 2:
            out[process] = max(base) / base[0] - 1
    return out


@pytest.mark.slow
@pytest.mark.timeout(1_800)
def test_a_thousand_live_cycles_with_faults_and_restarts_leave_the_store_equal_to_the_venue(tmp_path):
    soak = run_soak(tmp_path, CYCLES, restart_at=CYCLES // 2, rss_every=50)
    growth = growth_after_warm_up(soak.rss, WARM_UP)
    print(
        f"{CYCLES} cycles in {soak.seconds:.0f} s: {soak.venue_orders} venue orders, {soak.intents} intents, "
        f"{len(soak.faults)} faults, {soak.refused} cycles refused, {soak.held_pairs} pair-cycles held, "
        f"{soak.held_entries} entries held back, statuses {soak.statuses}, RSS growth {growth}"
    )
    assert soak.final["ok"], soak.final["why"]
    assert soak.differences == []
    assert soak.venue_orders >= CYCLES // 50 and len(soak.faults) >= CYCLES // 10  # it did trade, through many faults
    assert "restart" in soak.faults and {p for p, _, _ in soak.rss} == {1, 2}  # venue and trader restarted
    assert all(g < 0.05 for g in growth.values()), growth
