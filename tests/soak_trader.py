"""The trader's side of the live soak, in a process of its own as a scheduled run is: `build_context` from the settings
and the state store, then one live cycle per command read from stdin, one JSON answer per command on stdout.

    python soak_trader.py SETTINGS_JSON RUN_ID
    {"now": "2024-05-01T10:00:01+00:00"}   -> {"refused": bool, "held_pairs": int, "held_entries": int,
                                               "rss_kb": int, "s": seconds of run_cycle,
                                               "cpu_s": CPU seconds of run_cycle, every thread of the process}
    {"final": 10}                          -> {"ok": bool, "why": str}   (reconciles until the store agrees, for 10 s)

Everything else the process prints goes to stderr, so stdout carries only the answers.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path


def rss_kb() -> int:
    "This process's resident memory (VmRSS), in kB."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


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
    answers.write(json.dumps({"ready": True, "rss_kb": rss_kb()}) + "\n")
    if profile := os.environ.get("SOAK_PROFILE"):  # bench_soak.py --profile: where the cycles' time goes
        import cProfile  # noqa: PLC0415

        profiler = cProfile.Profile(time.process_time)  # CPU: the waits for the venue are not the trader's cost
        profiler.enable()
    for line in sys.stdin:
        command = json.loads(line)
        if "now" in command:
            t, cpu = time.perf_counter(), time.process_time()
            report = run_cycle(ctx, pd.Timestamp(command["now"]))
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
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
                        "s": round(seconds, 4),
                        "cpu_s": round(cpu, 4),
                    }
                )
                + "\n"
            )
        elif "final" in command:
            deadline = time.time() + float(command["final"])
            while not (final := reconcile(ex, settings.pairs)).ok and time.time() < deadline:
                time.sleep(0.2)
            answers.write(json.dumps({"ok": final.ok, "why": final.why()}) + "\n")
    if profile:
        profiler.disable()
        profiler.dump_stats(f"{profile}.{run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
