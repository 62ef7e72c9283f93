"""The trader's side of the live soak, in a process of its own as a scheduled run is: `build_context` from the settings
and the state store, then one live cycle per command read from stdin, one JSON answer per command on stdout.

    python soak_trader.py SETTINGS_JSON RUN_ID
    {"now": "2024-05-01T10:00:01+00:00", "block": 1}
                                           -> {"refused": bool, "held_pairs": int, "held_entries": int,
                                               "rss_kb": int, "s": seconds of run_cycle,
                                               "cpu_s": CPU seconds of run_cycle, every thread of the process,
                                               "sys_s": of which in the kernel, "minflt": minor page faults,
                                               "gc_s": seconds in Python's garbage collector}
    {"final": 10}                          -> {"ok": bool, "why": str}   (reconciles until the store agrees, for 10 s)

Everything else the process prints goes to stderr, so stdout carries only the answers.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import sys
import time
from pathlib import Path


def rss_kb() -> int:
    "This process's resident memory (VmRSS), in kB."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class Meter:
    """What one cycle costs the trader: wall and CPU seconds, of which in the kernel, minor page faults, seconds in
    Python's garbage collector (a gc callback around each collection); under `bench_soak.py --profile`, a CPU
    profile per block of cycles (`SOAK_PROFILE_BLOCKS` picks some), dumped by `dump`."""

    def __init__(self, profile: str | None, blocks: str):
        self.profile, self.profilers, self.blocks = profile, {}, {int(b) for b in blocks.split(",") if b}
        self.gc_s, self._gc_start = 0.0, 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase, info):
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self._gc_start

    def _profiler(self, block: int):
        if self.profile and block not in self.profilers and (not self.blocks or block in self.blocks):
            import cProfile  # noqa: PLC0415

            self.profilers[block] = cProfile.Profile(time.process_time)  # CPU: the venue's waits are not the trader's
        return self.profilers.get(block)

    def measure(self, block: int, run) -> tuple:
        "`run()`'s result and what it cost."
        t, cpu, usage, self.gc_s = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF), 0
        if profiler := self._profiler(block):
            profiler.enable()
        result = run()
        if profiler:
            profiler.disable()
        seconds, cpu, after = (
            time.perf_counter() - t,
            time.process_time() - cpu,
            resource.getrusage(resource.RUSAGE_SELF),
        )
        return result, {
            "s": round(seconds, 4),
            "cpu_s": round(cpu, 4),
            "sys_s": round(after.ru_stime - usage.ru_stime, 4),
            "minflt": after.ru_minflt - usage.ru_minflt,
            "gc_s": round(self.gc_s, 5),
        }

    def dump(self, run_id: str) -> None:
        for block, profiler in self.profilers.items():
            profiler.dump_stats(f"{self.profile}.{run_id}.block-{block:02d}")


class VenueClock:
    """The trader's clock in the soak: the venue's simulated time at the cycle's start, advancing with the wall inside a
    cycle (a settle's wait for an order still takes real seconds). The soak runs an hour of the venue's time in a few
    hundredths of a second; counted on this clock, an order of unknown outcome is decided at the next close, as it is
    in production (the receive window is seconds, a close an hour), not after as many closes as the machine runs in
    the wall's grace. Safe here because every fault the soak injects takes effect (or not) before its reply."""

    def __init__(self):
        self.start, self.wall = time.time(), time.monotonic()

    def set(self, now: float) -> None:
        self.start, self.wall = now, time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.wall)


def seeded_decide(pair, pred, price, equity, position, **_):
    """The soak tests execution, not the model: a policy seeded by the pair and the close that enters, moves its stop
    and exits often, whatever the network learned (the same in a restarted process)."""
    from morningstar_trader.types import Decision  # noqa: PLC0415  (imported after stdout is redirected)

    u = random.Random(f"{pair}|{price!r}").random()
    if position is None and u < 0.1:
        return Decision(pair, "open_long", round(0.05 * equity / price, 4), price * 0.98, price * 1.03, ("soak",))
    if position is not None and u < 0.08:
        return Decision(pair, "close", position.size, reasons=("soak",))
    if position is not None and u > 0.95 and position.stop_loss is not None and price * 0.985 > position.stop_loss:
        return Decision(pair, "adjust", 0.0, price * 0.985, position.take_profit, ("soak",))
    return Decision(pair, "hold", reasons=("soak",))


def main(settings_path: str, run_id: str) -> int:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # TensorFlow, warnings, prints: all to stderr
    import pandas as pd

    from morningstar_trader import kernel
    from morningstar_trader.config import Settings, load_secrets
    from morningstar_trader.cycle import build_context, run_cycle
    from morningstar_trader.live_execution import reconcile

    settings = Settings(**json.loads(Path(settings_path).read_text()))
    ctx = build_context(
        settings, load_secrets(), run_id=run_id, confirm_live=True, allow_unproven_model=True
    )  # the soak tests execution, not the model
    kernel.decide = seeded_decide
    ex = ctx.executor
    ex.exchange.options["recvWindow"] = 500  # short receive window: unknown orders resolve quickly
    ex.grace_s, ex.order_timeout_s = 0.8, 0.5
    ex.clock = ex.store.clock = clock = VenueClock()  # before any cycle: the store's rows and the grace in one time
    answers.write(json.dumps({"ready": True, "rss_kb": rss_kb()}) + "\n")
    meter = Meter(os.environ.get("SOAK_PROFILE"), os.environ.get("SOAK_PROFILE_BLOCKS", ""))
    for line in sys.stdin:
        command = json.loads(line)
        if "now" in command:
            clock.set(pd.Timestamp(command["now"]).timestamp())
            report, cost = meter.measure(command.get("block", 0), lambda: run_cycle(ctx, pd.Timestamp(command["now"])))
            pairs = report.pairs
            answers.write(
                json.dumps(
                    {
                        "refused": any(a.kind == "refused" for a in report.snapshot.alerts),
                        "held_pairs": int((pairs["reasons"] == "an order is still in flight").sum()),
                        "held_entries": int(pairs["verdict"].str.startswith("entry held back").sum())
                        if "verdict" in pairs
                        else 0,
                        "rss_kb": rss_kb(),
                        **cost,
                    }
                )
                + "\n"
            )
        elif "final" in command:
            deadline = time.time() + float(command["final"])
            while not (final := reconcile(ex, settings.pairs)).ok and time.time() < deadline:
                time.sleep(0.2)
            answers.write(json.dumps({"ok": final.ok, "why": final.why()}) + "\n")
    meter.dump(run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
