"""The 10,000-cycle live soak: tests/soak.py's seeded faults against the local venue, the trader in its own process,
replaced midway by a new one built from the same state store while the venue restarts. Prints the cycles, time, faults,
refusals, the trader's resident memory (VmRSS) every `--rss-every` cycles with its growth after each process's
warm-up, and whether the store equals the venue at the end. The suite runs the same soak with 1,000 cycles
(tests/test_live_soak.py, slow tier).

    .venv/bin/python bench/bench_soak.py [--cycles 10000] [--restart-at 5000] [--rss-every 500] [--warm-up 500]
        [--profile PATH [--profile-blocks 1,5,6,10]]

Every `--rss-every` cycles it also records the time those cycles took, the trader's open file descriptors and the
state store's size on disk, printed as a table at the end: a cycle's cost must not follow the store's history.
`--profile PATH` profiles the trader's run_cycle in CPU time, one profile per block of `--rss-every` cycles
(PATH.<run id>.block-NN; `--profile-blocks` picks some): what grows shows as the difference between two blocks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the local exchange and the soak the tests use

from soak import run_soak  # noqa: E402


def rss_table(rss, warm_up: int) -> list[str]:
    "One row per sample: process, cycles done, VmRSS in MB, and the change since that process's warm-up ended."
    lines, base = ["| trader process | cycles done | VmRSS MB | vs after warm-up |", "|---|---|---|---|"], {}
    first = {p: min(n for q, n, _ in rss if q == p) for p, _, _ in rss}
    for process, n, kb in rss:
        if n - first[process] >= warm_up:
            base.setdefault(process, kb)
        change = f"{kb / base[process] - 1:+.2%}" if process in base else "(warm-up)"
        lines.append(f"| {process} | {n:,} | {kb / 1024:.1f} | {change} |")
    return lines


def block_table(samples, soak) -> list[str]:
    """One row per sample: cycles done, the wall seconds of the cycles since the previous sample, their run_cycle
    median, the trader's CPU seconds in run_cycle (of which system time and garbage collection), its minor page
    faults, the faults injected in these cycles (of which venue restarts), open fds, store MB. Wall time carries the
    seeded faults' waits and the machine's load; the CPU seconds and the median are what a cycle costs the trader."""
    lines = [
        "| cycles done | s for these cycles | ms per cycle | run_cycle p50 ms | trader CPU s | of which system s "
        "| of which gc s | minor faults | faults injected (restarts) | open fds | SQLite MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    n0, s0 = 0, 0.0
    for n, s, fds, size in samples:
        p50, cpu = np.median(soak.cycle_seconds[n0:n]) * 1e3, sum(soak.cycle_cpu[n0:n])
        usage = {k: sum(u[k] for u in soak.cycle_usage[n0:n]) for k in ("sys_s", "minflt", "gc_s")}
        faults = [f for f, c in zip(soak.faults, soak.fault_cycles) if n0 <= c < n]
        lines.append(
            f"| {n:,} | {s - s0:.1f} | {(s - s0) / (n - n0) * 1e3:.1f} | {p50:.1f} | {cpu:.1f} | {usage['sys_s']:.1f} "
            f"| {usage['gc_s']:.2f} | {usage['minflt']:,} | {len(faults)} ({faults.count('restart')}) | {fds} "
            f"| {size / 2**20:.2f} |"
        )
        n0, s0 = n, s
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=10_000)
    ap.add_argument(
        "--restart-at", type=int, default=None, help="cycle of the trader and venue restart (default: half)"
    )
    ap.add_argument("--rss-every", type=int, default=500)
    ap.add_argument("--warm-up", type=int, default=500, help="cycles of each process before its memory is the baseline")
    ap.add_argument("--profile", default=None, help="cProfile each block into PATH.<run id>.block-NN")
    ap.add_argument("--profile-blocks", default="", help="the blocks to profile, e.g. 1,5,6,10 (default: all)")
    args = ap.parse_args()
    if args.profile:
        os.environ["SOAK_PROFILE"] = str(Path(args.profile).resolve())
        os.environ["SOAK_PROFILE_BLOCKS"] = args.profile_blocks
    samples = []

    def progress(n, s, refused, kb, fds, size):
        samples.append((n, s, fds, size))
        print(
            f"  {n:>6,} cycles  {s:7.0f} s  refused {refused}  VmRSS {kb / 1024:.1f} MB  fds {fds}  "
            f"SQLite {size / 2**20:.2f} MB",
            file=sys.stderr,
            flush=True,
        )

    restart = args.cycles // 2 if args.restart_at is None else args.restart_at
    started = time.time()
    with tempfile.TemporaryDirectory() as d:
        soak = run_soak(
            Path(d),
            args.cycles,
            restart_at=restart,
            rss_every=args.rss_every,
            progress=progress,
        )
    cycle_s = np.array(soak.cycle_seconds)
    rows = [
        ("cycles", f"{soak.cycles:,} (trader process and venue restarted at cycle {restart:,})"),
        (
            "wall time of the cycles",
            f"{soak.seconds:.0f} s ({soak.seconds / soak.cycles * 1e3:.0f} ms per cycle; run_cycle "
            f"p50 {np.median(cycle_s) * 1e3:.0f} ms, p99 {np.quantile(cycle_s, 0.99) * 1e3:.0f} ms)",
        ),
        ("whole run with training and start-ups", f"{time.time() - started:.0f} s"),
        (
            "faults injected",
            f"{len(soak.faults)}: " + ", ".join(f"{k} {v}" for k, v in Counter(soak.faults).most_common()),
        ),
        ("cycles refused whole (nothing sent)", str(soak.refused)),
        ("pair-cycles held (an order of that pair still open)", str(soak.held_pairs)),
        ("entries held back (cash uncertain)", str(soak.held_entries)),
        ("venue orders / intents", f"{soak.venue_orders} / {soak.intents} {soak.statuses}"),
        ("final reconciliation", soak.final["why"]),
        ("store == venue", "yes" if not soak.differences else "NO: " + "; ".join(soak.differences)),
    ]
    print("| | |\n|---|---|")
    print("\n".join(f"| {k} | {v} |" for k, v in rows))
    print()
    print("\n".join(rss_table(soak.rss, args.warm_up)))
    print()
    print("\n".join(block_table(samples, soak)))


if __name__ == "__main__":
    main()
