"""Pickup latency, idle and busy: Publisher's Redis broker (woken at each enqueue), bare Dramatiq, Celery.

`python -m bench pickup [--smoke]`. Three peers on the run's private Redis,
each under a key prefix of this run, each with a probe task and a filler task
on one queue:

- Publisher: `WakingRedisBroker` (publishing/redis_wakeup.py), a Dramatiq
  worker of 2 threads in this process, the default 1 s worker timeout;
- bare Dramatiq: Dramatiq's `RedisBroker`, likewise;
- Celery: `celery worker`, prefork, concurrency 2, acks late, no result
  backend, a process group of its own (bench.peer_celery_pickup).

A probe's pickup latency is the time from just before its send call to its
task's first statement, both read with `time.time()` on this one machine:
the Dramatiq probes record it in this process, the Celery probe (in a forked
pool child) pushes it to a Redis list that this process BLPOPs.

Idle Redis load: each peer alone (the others not running, since Redis counts
the whole server's commands), a probe, a quiet settle, then Redis commands
per second over a stretch of nothing sent.

Idle pickup: one probe at a time, to all three workers running side by side.
Rounds of a quiet Q alternating 1.1 s and 0.3 s: Publisher, Celery, then bare
Dramatiq are sent a third of Q apart, counted from bare Dramatiq's previous
probe's start. So bare Dramatiq, whose idle consumer polls with a backoff of
up to 1 s, has been quiet exactly Q before each send (early in its backoff,
or in its longest waits); the other two, which wait on no timer (Publisher's
consumer is woken by the enqueue, Celery's blocks in BRPOP), about 0.6-2 s.
Interleaved, so that the three see the same machine.

Busy pickup (informative): the same three workers, all loaded at once, each
fed a steady stream of filler jobs on the probes' queue from this process (a
50 ms sleep every 50 ms: half its 2 threads/processes busy), while probes go
out at random moments, one per 75 ms slot, the peers taking the slots in
turns (shuffled every three), none waiting for an earlier probe's pickup.

Each mode reports p50/p90/p99/max per peer and the ratios of Publisher's to
the others'; `figures["idle"][peer]` and `figures["busy"][peer]` hold them.
"""

from __future__ import annotations

import contextlib
import math
import random
import secrets
import statistics
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from bench import peer_celery_pickup
from bench.common import Context, Outcome, Processes, Target, delete_keys, percentile, publisher_env, ratio
from publishing.redis_wakeup import WakingRedisBroker

PUBLISHER, DRAMATIQ, CELERY = "publisher", "dramatiq", "celery"
PEERS = (PUBLISHER, DRAMATIQ, CELERY)  # the table's and the chart's order
LABELS = {
    PUBLISHER: "Publisher (WakingRedisBroker)",
    DRAMATIQ: "bare Dramatiq (RedisBroker)",
    CELERY: "Celery (prefork)",
}
WORKER_THREADS = 2
CELERY_CONCURRENCY = 2
BIN = Path(sys.executable).parent

# Idle: bare Dramatiq's quiet before each send, alternating: 0.3 s finds its consumer early in its
# backoff (80-320 ms sleeps), 1.1 s in its longest ones (0.5-1 s, capped by the worker timeout).
IDLE_GAPS = (1.1, 0.3)
# No send closer than this to the previous probe's start: the previous worker's ack and its
# consumer's next fetches are out of the way (it only binds when a pickup takes over Q/3 - this).
MIN_SPACING = 0.05

# Busy: per peer, a filler of FILLER_SECONDS every FILLER_PERIOD keeps FILLER_SECONDS / FILLER_PERIOD
# = 1 of the 2 threads/processes busy on average.
FILLER_SECONDS = 0.05
FILLER_PERIOD = 0.05
# One probe per slot, the peers taking turns: each peer gets one every 3 slots (0.225 s); slots this
# short keep 200 probes a peer within about 45 s.
PROBE_SLOT = 0.075
# Fillers begin this long before the first probe (the workers reach their busy rhythm) and go on
# this long after the last (late probes are still picked up under load).
FILLER_LEAD, FILLER_TAIL = 1.0, 1.0

PICKUP_TIMEOUT = 10.0  # one probe on a running worker (busy: after the fillers stopped)
BOOT_TIMEOUT = 60.0  # the first probe, which waits for Celery's boot
SEED = 20240611  # the probes' moments: the same schedule every run


@dataclass(frozen=True)
class Plan:
    idle_sends: int  # per peer
    busy_probes: int  # per peer
    idle_seconds: float  # the stretch over which idle Redis commands are counted
    settle_seconds: float  # after the warm-up probe: Dramatiq's backoff reaches its longest waits


FULL = Plan(idle_sends=200, busy_probes=200, idle_seconds=10.0, settle_seconds=2.0)
SMOKE = Plan(idle_sends=4, busy_probes=4, idle_seconds=1.0, settle_seconds=0.5)


class Peer(ABC):
    """One peer's worker: sends its probes and fillers, and learns when each probe started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: dict[str, float] = {}  # probe key -> time.time() just before the send call
        self.started: dict[str, float] = {}  # probe key -> time.time() at the task's first statement
        self.fillers = 0

    def probe(self, key: str) -> None:
        self.sent[key] = time.time()
        self._send_probe(key)

    def fill(self) -> None:
        self._send_filler(FILLER_SECONDS)
        self.fillers += 1

    def wait(self, keys: Collection[str], timeout: float) -> None:
        """Until each of `keys` has started; RuntimeError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while missing := [key for key in keys if key not in self.started]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{self.name}: {len(missing)} probes not picked up within {timeout:.0f} s "
                    f"({missing[0]}, ...)"
                )
            # At most a second at a time, so that a dead worker is noticed (Celery's _collect).
            self._collect(keys, min(left, 1.0))

    def latencies_ms(self, keys: Sequence[str]) -> list[float]:
        return [(self.started[key] - self.sent[key]) * 1000 for key in keys]

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def _send_probe(self, key: str) -> None: ...

    @abstractmethod
    def _send_filler(self, seconds: float) -> None: ...

    @abstractmethod
    def _collect(self, keys: Collection[str], timeout: float) -> None:
        """Block until `keys` have all started or `timeout` passed, whichever comes first."""


class DramatiqPeer(Peer):
    """A Dramatiq worker in this process, on `broker`; its probe records its start here."""

    def __init__(self, name: str, broker: RedisBroker) -> None:
        super().__init__(name)
        self._recorded = threading.Condition()

        def probe(key: str) -> None:
            now = time.time()  # first: what is measured ends here
            with self._recorded:
                self.started[key] = now
                self._recorded.notify_all()

        def filler(seconds: float) -> None:
            time.sleep(seconds)

        # Both on one queue: a probe waits behind the fillers fetched before it, as a job would.
        options: dict[str, Any] = {"broker": broker, "queue_name": f"bench-pickup-{name}", "max_retries": 0}
        self._probe = dramatiq.actor(actor_name=f"probe_{name}", **options)(probe)
        self._filler = dramatiq.actor(actor_name=f"filler_{name}", **options)(filler)
        self.worker = dramatiq.Worker(broker, worker_threads=WORKER_THREADS)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def _send_probe(self, key: str) -> None:
        self._probe.send(key)

    def _send_filler(self, seconds: float) -> None:
        self._filler.send(seconds)

    def _collect(self, keys: Collection[str], timeout: float) -> None:
        with self._recorded:
            # The condition's lock makes the check and the wait one step: no start slips between them.
            self._recorded.wait_for(lambda: all(key in self.started for key in keys), timeout)


class CeleryPeer(Peer):
    """`celery worker` (prefork) as a process group of its own; its probes report through a Redis list."""

    def __init__(self, redis_url: str, namespace: str, client: redis.Redis, processes: Processes) -> None:
        super().__init__(CELERY)
        self.namespace = namespace
        self.app = peer_celery_pickup.make_app(redis_url, namespace)
        self.client = client
        self.processes = processes
        self.env = publisher_env(BENCH_REDIS_URL=redis_url, BENCH_NAMESPACE=namespace, PYTHONUNBUFFERED="1")
        self._started_list = peer_celery_pickup.started_key(namespace)

    def start(self) -> None:
        argv = [str(BIN / "celery"), "-A", "bench.peer_celery_pickup", "worker"]
        argv += ["--pool", "prefork", "--concurrency", str(CELERY_CONCURRENCY)]
        argv += ["--queues", peer_celery_pickup.QUEUE, "--hostname", f"{self.namespace}@%h"]
        # As the overhead benchmark runs it: cluster chatter and per-task INFO lines off (Dramatiq
        # has neither).
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
        self.processes.start(self.name, argv, self.env)

    def stop(self) -> None:
        try:
            if self.name in self.processes.running:
                self.processes.stop(self.name)
        finally:
            self.app.close()  # the sender's connection pool

    def _send_probe(self, key: str) -> None:
        self.app.send_task(peer_celery_pickup.PROBE, args=(key,))

    def _send_filler(self, seconds: float) -> None:
        self.app.send_task(peer_celery_pickup.FILLER, args=(seconds,))

    def _collect(self, keys: Collection[str], timeout: float) -> None:
        self.processes.check_alive(self.name)
        popped: Any = self.client.blpop([self._started_list], timeout=max(timeout, 0.01))
        if popped is None:
            return
        rest: Any = self.client.lpop(self._started_list, 10_000)  # whatever else came meanwhile
        for value in [popped[1], *(rest or [])]:
            key, _, started = value.decode().rpartition(" ")
            self.started[key] = float(started)


@contextlib.contextmanager
def running(peer: Peer) -> Iterator[Peer]:
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def pause_until(moment: float) -> None:
    """Sleep until time.time() reaches `moment` (at once if it has)."""
    time.sleep(max(0.0, moment - time.time()))


def warm_up(peer: Peer, timeout: float = PICKUP_TIMEOUT) -> float:
    """A first probe, not counted: connections made, Celery booted. Returns its start."""
    key = f"warm-up-{peer.name}-{len(peer.sent)}"
    peer.probe(key)
    peer.wait([key], timeout)
    return peer.started[key]


def idle_commands_per_second(client: redis.Redis, seconds: float) -> float:
    before = int(client.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    after = int(client.info("stats")["total_commands_processed"])
    return (after - before - 1) / seconds  # minus our own INFO


def idle_load(peer: Peer, client: redis.Redis, plan: Plan, *, boot_timeout: float = PICKUP_TIMEOUT) -> float:
    """Redis commands per second that `peer`'s running, idle worker costs (nothing else running)."""
    warm_up(peer, boot_timeout)
    time.sleep(plan.settle_seconds)
    return idle_commands_per_second(client, plan.idle_seconds)


def idle_pickups(peers: Sequence[Peer], rounds: int) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """One probe at a time, in rounds; the last of `peers` is the poller whose quiet is held to the gap.

    Returns each peer's probe keys and, for each probe, how long its worker had been quiet (seconds
    since its previous probe started).
    """
    keys: dict[str, list[str]] = {peer.name: [] for peer in peers}
    quiet: dict[str, list[float]] = {peer.name: [] for peer in peers}
    last_start = {peer.name: warm_up(peer) for peer in peers}
    anchor = last_start[peers[-1].name]
    last_pickup = max(last_start.values())
    for n in range(rounds):
        gap = IDLE_GAPS[n % len(IDLE_GAPS)]
        for index, peer in enumerate(peers, start=1):
            pause_until(max(anchor + gap * index / len(peers), last_pickup + MIN_SPACING))
            key = f"idle-{peer.name}-{n}"
            peer.probe(key)
            peer.wait([key], PICKUP_TIMEOUT)
            quiet[peer.name].append(peer.sent[key] - last_start[peer.name])
            last_start[peer.name] = last_pickup = peer.started[key]
            keys[peer.name].append(key)
        anchor = last_start[peers[-1].name]
    return keys, quiet


def busy_pickups(
    peers: Sequence[Peer], probes: int, rng: random.Random
) -> tuple[dict[str, list[str]], float]:
    """`probes` probes per peer at random moments while every peer takes a steady filler stream.

    One thread sends everything at its planned time, so that the filler streams stay steady and no
    two sends overlap. Returns each peer's probe keys and the seconds the fillers ran.
    """
    order: list[Peer] = []
    for _ in range(probes):
        turn = list(peers)
        rng.shuffle(turn)  # no peer always right after the same other
        order += turn
    began = time.time()
    first = began + FILLER_LEAD
    # Uniform over one filler period within each slot: the probe's phase against its peer's
    # filler stream is uniform too, and probes stay >= PROBE_SLOT - FILLER_PERIOD apart.
    schedule = [
        (first + k * PROBE_SLOT + rng.uniform(0, FILLER_PERIOD), peer) for k, peer in enumerate(order)
    ]
    end = schedule[-1][0] + FILLER_TAIL
    # The peers' streams offset by a fraction of a period, so that their fillers do not queue behind
    # one another in this thread.
    next_fill = {peer.name: began + i * FILLER_PERIOD / len(peers) for i, peer in enumerate(peers)}
    by_name = {peer.name: peer for peer in peers}
    keys: dict[str, list[str]] = {peer.name: [] for peer in peers}
    sent = 0
    while True:
        filler_name = min(next_fill, key=lambda name: next_fill[name])
        filler_at = next_fill[filler_name]
        probe_at = schedule[sent][0] if sent < len(schedule) else math.inf
        if min(filler_at, probe_at) > end:
            break
        if probe_at <= filler_at:
            pause_until(probe_at)
            peer = schedule[sent][1]
            key = f"busy-{peer.name}-{sent}"
            peer.probe(key)
            keys[peer.name].append(key)
            sent += 1
        else:
            pause_until(filler_at)
            by_name[filler_name].fill()
            # On the planned grid even if this one went late: the rate stays FILLER_PERIOD's.
            next_fill[filler_name] += FILLER_PERIOD
    filled_s = time.time() - began
    for peer in peers:
        peer.wait(keys[peer.name], PICKUP_TIMEOUT)
    return keys, filled_s


def spread_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "sends": len(values),
        "p50_ms": statistics.median(values),
        "p90_ms": percentile(values, 0.90),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values),
    }


def measure(
    context: Context, plan: Plan, prefix: str, client: redis.Redis, processes: Processes
) -> dict[str, Any]:
    # `alone`: the brokers that measure the idle load get namespaces of their own, so that the
    # wake-up listener a WakingRedisBroker leaves behind (a daemon thread, never stopped) hears none
    # of the later enqueues.
    def dramatiq_peer(alone: bool = False) -> Peer:
        namespace = f"{prefix}-dramatiq{'-alone' if alone else ''}"
        return DramatiqPeer(DRAMATIQ, RedisBroker(url=context.redis_url, namespace=namespace))  # type: ignore[no-untyped-call]

    def publisher_peer(alone: bool = False) -> Peer:
        namespace = f"{prefix}-publisher{'-alone' if alone else ''}"
        return DramatiqPeer(PUBLISHER, WakingRedisBroker(url=context.redis_url, namespace=namespace))

    load: dict[str, float] = {}
    # Each alone, in workers of their own: these are stopped and fresh ones run the pickups.
    for make in (dramatiq_peer, publisher_peer):
        began = time.monotonic()
        with running(make(alone=True)) as peer:
            load[peer.name] = idle_load(peer, client, plan)
        print(f"  idle Redis load, {peer.name}: {load[peer.name]:.1f} commands/s", elapsed(began), flush=True)
    celery = CeleryPeer(context.redis_url, f"{prefix}-celery", client, processes)
    with contextlib.ExitStack() as stack:
        began = time.monotonic()
        stack.enter_context(running(celery))
        # Celery's alone too (the others stopped), then on through the pickups: its boot takes seconds.
        load[CELERY] = idle_load(celery, client, plan, boot_timeout=BOOT_TIMEOUT)
        print(f"  idle Redis load, celery: {load[CELERY]:.1f} commands/s", elapsed(began), flush=True)
        dramatiq_, publisher = dramatiq_peer(), publisher_peer()
        stack.enter_context(running(dramatiq_))
        stack.enter_context(running(publisher))
        began = time.monotonic()
        # Bare Dramatiq last: its quiet is the one held to the gap.
        idle_keys, quiet = idle_pickups([publisher, celery, dramatiq_], plan.idle_sends)
        print(f"  idle pickups: {plan.idle_sends} rounds", elapsed(began), flush=True)
        began = time.monotonic()
        busy_keys, filled_s = busy_pickups(
            [publisher, celery, dramatiq_],
            plan.busy_probes,
            random.Random(SEED),  # noqa: S311 (a schedule, not a secret)
        )
        print(f"  busy pickups: {plan.busy_probes} probes a peer", elapsed(began), flush=True)
        peers: dict[str, Peer] = {PUBLISHER: publisher, DRAMATIQ: dramatiq_, CELERY: celery}
        idle: dict[str, Any] = {}
        busy: dict[str, Any] = {}
        for name in PEERS:
            peer = peers[name]
            idle[name] = spread_ms(peer.latencies_ms(idle_keys[name])) | {
                "idle_redis_commands_per_s": load[name],
                "quiet_s": {key: round(value, 3) for key, value in spread_s(quiet[name]).items()},
            }
            busy[name] = spread_ms(peer.latencies_ms(busy_keys[name])) | {
                "fillers": peer.fillers,
                "fillers_per_s": peer.fillers / filled_s,
            }
    return {
        "idle": idle,
        "busy": busy,
        "setup": {
            "worker_threads": WORKER_THREADS,
            "celery_concurrency": CELERY_CONCURRENCY,
            "idle_gaps_s": list(IDLE_GAPS),
            "filler_s": FILLER_SECONDS,
            "filler_period_s": FILLER_PERIOD,
            "probe_slot_s": PROBE_SLOT,
            "seed": SEED,
            "plan": asdict(plan),
        },
    }


def elapsed(began: float) -> str:
    return f"({time.monotonic() - began:.0f} s)"


def spread_s(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "p50": statistics.median(values), "max": max(values)}


def run(context: Context) -> Outcome:
    plan = SMOKE if context.smoke else FULL
    prefix = f"bench-pickup-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(context.redis_url, socket_timeout=30)
    processes = Processes(context.workdir)
    try:
        figures = measure(context, plan, prefix, client, processes)
    finally:
        # Each step whatever the one before did: no Celery process and no key of ours outlives the run.
        try:
            processes.stop_all()
        finally:
            try:
                delete_keys(client, f"{prefix}*")
            finally:
                client.close()
    return outcome(figures, plan)


COLUMNS = ("p50_ms", "p90_ms", "p99_ms", "max_ms")


def outcome(figures: dict[str, Any], plan: Plan) -> Outcome:
    idle, busy = figures["idle"], figures["busy"]
    table = [["pickup (ms from send to start)", "p50", "p90", "p99", "max", "idle Redis cmd/s"]]
    for mode, rows in (("idle", idle), ("busy", busy)):
        for name in PEERS:
            row = rows[name]
            cmds = f"{row['idle_redis_commands_per_s']:.1f}" if mode == "idle" else ""
            table.append([f"{mode}: {LABELS[name]}", *(f"{row[key]:.1f}" for key in COLUMNS), cmds])
        for name in (DRAMATIQ, CELERY):
            ours, theirs = rows[PUBLISHER], rows[name]
            cmds = ""
            if mode == "idle":
                cmds = f"{ratio(ours['idle_redis_commands_per_s'], theirs['idle_redis_commands_per_s']):.2f}x"
            table.append(
                [
                    f"{mode}: ratio publisher/{name}",
                    *(f"{ratio(ours[key], theirs[key]):.3f}" for key in COLUMNS),
                    cmds,
                ]
            )
    ours, bare = idle[PUBLISHER], idle[DRAMATIQ]
    load = ratio(ours["idle_redis_commands_per_s"], bare["idle_redis_commands_per_s"])
    targets = [
        Target("idle pickup p50 <= 5 ms", f"{ours['p50_ms']:.1f} ms", ours["p50_ms"] <= 5),
        Target("idle pickup p99 <= 20 ms", f"{ours['p99_ms']:.1f} ms", ours["p99_ms"] <= 20),
        Target("idle Redis load <= 2x bare Dramatiq", f"{load:.2f}x", load <= 2),
    ]
    quiet = {name: idle[name]["quiet_s"] for name in PEERS}
    rates = ", ".join(f"{name} {busy[name]['fillers_per_s']:.1f}/s" for name in PEERS)
    return Outcome(
        title=f"Pickup latency, idle and busy, {plan.idle_sends} and {plan.busy_probes} probes a peer",
        table=table,
        targets=targets,
        figures=figures,
        notes=[
            f"Publisher and bare Dramatiq: a Dramatiq worker of {WORKER_THREADS} threads each, in the "
            "benchmark's process, the default 1 s worker timeout and middleware; Celery: `celery worker`, "
            f"prefork, concurrency {CELERY_CONCURRENCY}, acks late, no result backend, gossip, mingle and "
            "heartbeat off, default prefetch. One private Redis, a key prefix each.",
            "Latency: from just before the send call to the probe task's first statement, both "
            "`time.time()` on the same machine (one clock). The send itself is in it (Dramatiq's enqueue "
            "script, plus Publisher's PUBLISH; kombu's publish). The Celery probe, in a pool child, "
            "reports its start through a Redis list (pushed after the reading, so not counted).",
            "Idle: one probe at a time to the three running workers, in rounds of a quiet Q alternating "
            f"{IDLE_GAPS[0]} s and {IDLE_GAPS[1]} s: Publisher, Celery, then bare Dramatiq sent Q/3 apart "
            "from bare Dramatiq's previous start, so that bare Dramatiq (which polls, backing off up to "
            f"1 s) had been quiet Q before each send (measured: {quiet[DRAMATIQ]['min']:.2f}-"
            f"{quiet[DRAMATIQ]['max']:.2f} s); Publisher {quiet[PUBLISHER]['min']:.2f}-"
            f"{quiet[PUBLISHER]['max']:.2f} s, Celery "
            f"{quiet[CELERY]['min']:.2f}-{quiet[CELERY]['max']:.2f} s "
            "(neither waits on a timer: Publisher's consumer is woken by the enqueue, Celery's blocks in "
            "BRPOP). Quiet: from the peer's previous probe's start to the send.",
            f"Idle Redis load: each peer's worker alone, after a probe and {plan.settle_seconds:g} s of "
            f"quiet, commands per second over {plan.idle_seconds:g} s (INFO total_commands_processed).",
            f"Busy (informative, no target): all three workers at once, each fed a filler job (sleep "
            f"{FILLER_SECONDS * 1000:.0f} ms) on the probes' queue every {FILLER_PERIOD * 1000:.0f} ms at "
            "fixed times, the three streams a third of a period apart: one job-second per second, half "
            f"of the {WORKER_THREADS} threads/processes, plus each job's overhead (sent: {rates}). Probes "
            f"one per {PROBE_SLOT * 1000:.0f} ms slot, none waiting for an earlier one's pickup, the peers "
            "taking the slots in a random order each three slots, each probe at a random moment in the "
            f"first {FILLER_PERIOD * 1000:.0f} ms of its slot "
            "(a uniform phase against the filler stream), so one probe per peer every "
            f"{3 * PROBE_SLOT:.3g} s on average; fillers from {FILLER_LEAD:.0f} s before the first probe "
            f"to {FILLER_TAIL:.0f} s after the last. The two Dramatiq workers share the benchmark's "
            "process (and its GIL) with each other and the sender; Celery's pool does not.",
        ],
    )


def chart(figures: dict[str, Any], axes: Any) -> None:
    groups = [(mode, key) for mode in ("idle", "busy") for key in ("p50_ms", "p90_ms", "p99_ms")]
    width = 0.8 / len(PEERS)
    for offset, name in enumerate(PEERS):
        positions = [k + offset * width for k in range(len(groups))]
        values = [figures[mode][name][key] for mode, key in groups]
        bars = axes.bar(positions, values, width, label=LABELS[name])
        axes.bar_label(bars, labels=[f"{v:.1f}" if v < 10 else f"{v:.0f}" for v in values], fontsize=7)
    axes.set_xticks(
        [k + width * (len(PEERS) - 1) / 2 for k in range(len(groups))],
        [f"{mode} {key.removesuffix('_ms')}" for mode, key in groups],
    )
    axes.set_ylabel("ms from send to start")
    axes.set_yscale("log")
    # Headroom above the tallest bar (a log axis: a factor) for the legend.
    top = max(figures[mode][name][key] for mode, key in groups for name in PEERS)
    axes.set_ylim(top=top * 8)
    axes.legend(fontsize=8, loc="upper right")
