"""Idle pickup latency: Dramatiq's Redis broker against Publisher's (woken by each enqueue).

`python -m bench pickup [--smoke]`. On the run's private Redis, each
broker gets a Dramatiq worker (2 threads, the default 1 s worker timeout)
and a no-op actor; one message at a time is sent to the idle worker, and the
time from `send` to the actor's start is recorded. Then, with nothing sent
for a few seconds, the Redis commands per second that the idle worker costs.
Both brokers run in one run, interleaved, on the same Redis.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from bench.common import Context, Outcome, Target, percentile, ratio
from publishing.redis_wakeup import WakingRedisBroker


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


def idle_commands_per_second(client: redis.Redis, seconds: float) -> float:
    before = int(client.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    after = int(client.info("stats")["total_commands_processed"])
    return (after - before - 1) / seconds  # minus our own INFO


SENDS, SMOKE_SENDS = 200, 10
IDLE_SECONDS, SMOKE_IDLE_SECONDS = 10.0, 2.0


def measure(redis_url: str, sends: int, idle_seconds: float) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)

    def probes() -> list[Probe]:
        return [
            Probe("dramatiq", RedisBroker(url=redis_url, namespace="bench-pickup-bare")),  # type: ignore[no-untyped-call]
            Probe("publisher", WakingRedisBroker(url=redis_url, namespace="bench-pickup-waking")),
        ]

    results: dict[str, Any] = {}
    # Idle load first, one worker at a time (the other not started).
    for probe in probes():
        probe.worker.start()
        time.sleep(2)  # let the consumers back off to their idle rhythm
        results[probe.name] = {"idle_redis_commands_per_s": idle_commands_per_second(client, idle_seconds)}
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


def run(context: Context) -> Outcome:
    sends, idle = (SMOKE_SENDS, SMOKE_IDLE_SECONDS) if context.smoke else (SENDS, IDLE_SECONDS)
    results = measure(context.redis_url, sends, idle)
    bare, ours = results["dramatiq"], results["publisher"]
    table = [["idle pickup (ms)", "p50", "p90", "p99", "max", "idle Redis cmd/s"]]
    for name, row in results.items():
        table.append(
            [
                name,
                *(f"{row[key]:.1f}" for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
                f"{row['idle_redis_commands_per_s']:.1f}",
            ]
        )
    load = ratio(ours["idle_redis_commands_per_s"], bare["idle_redis_commands_per_s"])
    table.append(
        [
            "ratio publisher/dramatiq",
            f"{ratio(ours['p50_ms'], bare['p50_ms']):.3f}",
            "",
            f"{ratio(ours['p99_ms'], bare['p99_ms']):.3f}",
            "",
            f"{load:.2f}x",
        ]
    )
    targets = [
        Target("idle pickup p50 <= 5 ms", f"{ours['p50_ms']:.1f} ms", ours["p50_ms"] <= 5),
        Target("idle pickup p99 <= 20 ms", f"{ours['p99_ms']:.1f} ms", ours["p99_ms"] <= 20),
        Target("idle Redis load <= 2x bare Dramatiq", f"{load:.2f}x", load <= 2),
    ]
    return Outcome(
        title=f"Idle pickup latency, {sends} sends each, interleaved",
        table=table,
        targets=targets,
        figures=results,
        notes=[
            "One message at a time to an idle worker (2 threads, the default 1 s worker timeout), "
            "after 0.3 s or 1.1 s of quiet; the time from send to the actor's start.",
        ],
    )


def chart(figures: dict[str, Any], axes: Any) -> None:
    names = list(figures)
    keys = ("p50_ms", "p90_ms", "p99_ms")
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        positions = [k + offset * width for k in range(len(keys))]
        axes.bar(positions, [figures[name][key] for key in keys], width, label=name)
    axes.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(keys))], ["p50", "p90", "p99"])
    axes.set_ylabel("ms from send to start")
    axes.set_yscale("log")
    axes.legend()
