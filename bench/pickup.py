"""Idle pickup latency: Dramatiq's Redis broker against Publisher's (woken by each enqueue).

`python -m bench.pickup [--sends N] [--quick]`. On a private Redis, each
broker gets a Dramatiq worker (2 threads, the default 1 s worker timeout)
and a no-op actor; one message at a time is sent to the idle worker, and the
time from `send` to the actor's start is recorded. Then, with nothing sent
for a few seconds, the Redis commands per second that the idle worker costs.
Both brokers run in one run, interleaved, on the same Redis.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from publishing.redis_server import RedisServer
from publishing.redis_wakeup import WakingRedisBroker

RESULTS = Path(__file__).parent / "results"


class Probe:
    """A worker on `broker` with an actor that records when each message started."""

    def __init__(self, name: str, broker: RedisBroker) -> None:
        self.name = name
        self.broker = broker
        self.started: dict[str, float] = {}
        self.arrived = threading.Event()

        def noop(key: str) -> None:
            self.started[key] = time.perf_counter()
            self.arrived.set()

        self.actor = dramatiq.actor(broker=broker, actor_name=f"noop_{name}", queue_name=f"bench-{name}")(
            noop
        )
        self.worker = dramatiq.Worker(broker, worker_threads=2)

    def send_one(self, key: str, timeout: float = 10) -> float:
        """Seconds from send to the actor's start."""
        self.arrived.clear()
        sent = time.perf_counter()
        self.actor.send(key)
        if not self.arrived.wait(timeout):
            raise RuntimeError(f"{self.name}: message {key} not picked up within {timeout}s")
        return self.started[key] - sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def idle_commands_per_second(client: redis.Redis, seconds: float) -> float:
    before = int(client.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    after = int(client.info("stats")["total_commands_processed"])
    return (after - before - 1) / seconds  # minus our own INFO


def run(sends: int, idle_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, RedisServer(Path(folder)) as server:
        client = redis.Redis.from_url(server.url)

        def probes() -> list[Probe]:
            return [
                Probe("dramatiq", RedisBroker(url=server.url, namespace="bench-bare")),  # type: ignore[no-untyped-call]
                Probe("publisher", WakingRedisBroker(url=server.url, namespace="bench-waking")),
            ]

        results: dict[str, Any] = {}
        # Idle load first, one worker at a time (the other not started).
        for probe in probes():
            probe.worker.start()
            time.sleep(2)  # let the consumers back off to their idle rhythm
            results[probe.name] = {
                "idle_redis_commands_per_s": idle_commands_per_second(client, idle_seconds)
            }
            probe.worker.stop()
        running = probes()
        for probe in running:
            probe.worker.start()
        latencies: dict[str, list[float]] = {probe.name: [] for probe in running}
        for n in range(sends):
            for probe in running:  # interleaved, so both see the same machine
                # Idle: long enough for the consumer to be back in its longest wait.
                time.sleep(0.3 if n % 2 else 1.1)
                latencies[probe.name].append(probe.send_one(f"{probe.name}-{n}") * 1000)
        for probe in running:
            probe.worker.stop()
            values = latencies[probe.name]
            results[probe.name] |= {
                "sends": len(values),
                "p50_ms": statistics.median(values),
                "p90_ms": percentile(values, 0.90),
                "p99_ms": percentile(values, 0.99),
                "max_ms": max(values),
            }
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=200, help="messages per broker (default 200)")
    parser.add_argument("--quick", action="store_true", help="20 sends, 3 s idle sample: a smoke run")
    args = parser.parse_args(argv)
    sends, idle = (20, 3.0) if args.quick else (args.sends, 10.0)
    started = time.monotonic()
    results = run(sends, idle)
    bare, ours = results["dramatiq"], results["publisher"]
    print(f"idle pickup latency, {sends} sends each, interleaved (ms)")
    print(f"{'':24}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'idle Redis cmd/s':>18}")
    for name, row in results.items():
        print(
            f"{name:24}{row['p50_ms']:8.1f}{row['p90_ms']:8.1f}{row['p99_ms']:8.1f}{row['max_ms']:8.1f}"
            f"{row['idle_redis_commands_per_s']:18.1f}"
        )
    print(
        f"ratio publisher/dramatiq: p50 {ours['p50_ms'] / bare['p50_ms']:.3f}, "
        f"p99 {ours['p99_ms'] / bare['p99_ms']:.3f}, idle Redis load "
        f"{ours['idle_redis_commands_per_s'] / bare['idle_redis_commands_per_s']:.2f}x"
    )
    print(f"took {time.monotonic() - started:.0f}s")
    RESULTS.mkdir(exist_ok=True)
    name = "pickup-quick.json" if args.quick else "pickup.json"
    command = "python -m bench.pickup" + (" --quick" if args.quick else "")
    (RESULTS / name).write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
