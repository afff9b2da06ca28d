"""Rate-limit fairness: one owner's backlog against another owner's single publishing, fair vs first come.

`python -m bench fairness [--smoke]`. Two deployments side by side (real
processes, production settings, a PostgreSQL database and a Redis namespace
each, `rundramatiq --processes 2 --threads 4`, the `InstantPipeline` of
bench.ratelimit so that the limiter alone paces starts), one with
PUBLISHING_RATE_LIMIT_FAIR on and one with it off (the behaviour before
fairness: a free slot goes to whichever deferred message asks first). Rounds
alternate between them.

A round (`python -m bench.fairness round ...`, in the deployment's
environment, through `publishing_initiate` as the API does): two new
users, alice with BACKLOG projects and bob with one. Alice fills the window
with starts spread over it (one every window/limit seconds, so that slots free
one at a time, as in a limit saturated for a while), then initiates the rest of
her backlog at once; half a spacing later, with the window full, bob initiates
his one publishing. Once bob's has started, alice's remaining ones are
cancelled and the next round waits for an empty window.

Measured from the limiter's own grants (the window's members, which name the
owner, read every 0.5 s on Redis' clock): the free slots bob waited (grants
after bob's publishing was queued, up to and including his own: 1 means the
first slot that freed was his) and the seconds from queued to his grant.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench.common import ROOT, Context, Deployment, Outcome, Target, rate_limited_projects, ratio
from bench.ratelimit import Grants


@dataclass(frozen=True)
class Plan:
    limit: int
    window_s: int
    backlog: int
    rounds: int
    processes: int
    threads: int

    @property
    def rate(self) -> str:
        return f"{self.limit}/{self.window_s}s"


FULL = Plan(limit=2, window_s=4, backlog=20, rounds=5, processes=2, threads=4)
SMOKE = Plan(limit=2, window_s=2, backlog=6, rounds=1, processes=1, threads=4)
MODES = ("fair", "first come")


def play_round(tag: str, limit: int, window_s: float, backlog: int) -> dict[str, Any]:
    """Run in a deployment's environment: one round (see the module's docstring); what bob's wait needs."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from publishing.models import Publishing
    from publishing.rate_limit import publishing_limiter
    from publishing.services.publishings import publishing_cancel, publishing_initiate

    limiter = publishing_limiter(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10))
    assert limiter is not None, "PUBLISHING_RATE_LIMIT is off"

    def until(condition: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"round {tag}: {what} not within {timeout:.0f} s")
            time.sleep(0.05)

    users = get_user_model().objects
    alice = users.create(username=f"alice-{tag}")
    bob = users.create(username=f"bob-{tag}")

    mine = rate_limited_projects(alice, backlog, prefix="fair")
    (his,) = rate_limited_projects(bob, 1, prefix="fair")
    until(lambda: limiter.usage() == 0, "an empty window", window_s * 3)
    spacing = window_s / limit
    for n in range(limit):
        publishing_initiate(user=alice, project_id=mine[n].pk)
        until(lambda n=n: limiter.usage() == n + 1, f"alice's start {n + 1}", window_s)
        if n + 1 < limit:
            time.sleep(spacing)
    for project in mine[limit:]:
        publishing_initiate(user=alice, project_id=project.pk)
    time.sleep(spacing / 2)
    usage_at_ask = limiter.usage()
    publishing = publishing_initiate(user=bob, project_id=his.pk)
    until(
        lambda: Publishing.objects.filter(pk=publishing.pk, started_at__isnull=False).exists(),
        "bob's start",
        window_s * (backlog / limit + 3),
    )
    for waiting in Publishing.objects.filter(project__owner=alice, status=Publishing.Status.QUEUED):
        with contextlib.suppress(Exception):  # it may have started meanwhile
            publishing_cancel(publishing=waiting, by=alice)
    queued_at = Publishing.objects.get(pk=publishing.pk).queued_at
    assert queued_at is not None
    return {
        "alice": str(alice.pk),
        "bob": str(bob.pk),
        "bob_queued_ms": int(queued_at.timestamp() * 1000),
        "usage_at_ask": usage_at_ask,
    }


def bob_wait(grants: Grants, round_: dict[str, Any]) -> dict[str, Any]:
    """Bob's wait in one round, from the limiter's grants: free slots (his included) and seconds."""
    owners = [(member.decode().split(":")[0], ms) for member, ms in list(grants.seen.items())]
    (granted,) = [ms for owner, ms in owners if owner == round_["bob"]]
    asked = round_["bob_queued_ms"]
    before = sorted(ms for owner, ms in owners if asked < ms < granted)
    return {
        "slots": len(before) + 1,
        "seconds": round((granted - asked) / 1000, 2),
        "alice_before": sum(1 for owner, ms in owners if owner == round_["alice"] and asked < ms < granted),
        "usage_at_ask": round_["usage_at_ask"],
    }


def measure(context: Context, plan: Plan) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(
            contextlib.closing(redis.Redis.from_url(context.redis_url, socket_timeout=10))
        )
        sites: dict[str, tuple[Deployment, Grants]] = {}
        for mode in MODES:
            site = stack.enter_context(
                Deployment(
                    context,
                    "fairness",
                    PUBLISHING_RATE_LIMIT=plan.rate,
                    PUBLISHING_RATE_LIMIT_FAIR="true" if mode == "fair" else "false",
                    PUBLISHING_PIPELINE="bench.ratelimit.InstantPipeline",
                )
            )
            name = f"workers-{mode.replace(' ', '-')}"
            site.start_worker(name, processes=plan.processes, threads=plan.threads)
            site.wait_ready(name, plan.processes)
            grants = stack.enter_context(Grants(client, f"{site.namespace}:publishing-starts"))
            sites[mode] = (site, grants)
        for number in range(plan.rounds):
            for mode in MODES:
                site, grants = sites[mode]
                result = subprocess.run(
                    [
                        sys.executable, "-m", "bench.fairness", "round", f"{number}",
                        str(plan.limit), str(plan.window_s), str(plan.backlog),
                    ],
                    cwd=ROOT, env=site.env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                if result.returncode != 0:
                    output = f"{result.stdout}\n{result.stderr[-4000:]}"
                    raise RuntimeError(f"round {number} ({mode}) failed:\n{output}")
                round_ = json.loads(result.stdout.strip().splitlines()[-1])
                time.sleep(1.0)  # one more sample of the window
                if grants.error is not None:
                    raise RuntimeError("reading the limiter's window failed") from grants.error
                results[mode].append(bob_wait(grants, round_))
                print(f"  round {number + 1} {mode}: {results[mode][-1]}", flush=True)
        logs: dict[str, dict[str, int]] = {}
        for mode in MODES:
            site, _ = sites[mode]
            log = site.processes.log(f"workers-{mode.replace(' ', '-')}", tail=100_000_000)
            logs[mode] = {"tracebacks": log.count("Traceback"), "kept": log.count("is kept for")}
    return {"plan": plan.__dict__, "rounds": results, "logs": logs}


def run(context: Context) -> Outcome:
    plan = SMOKE if context.smoke else FULL
    figures = measure(context, plan)
    rounds = figures["rounds"]
    medians: dict[str, dict[str, float]] = {}
    table = [["mode", "rounds", "free slots p50", "max", "seconds p50", "max", "alice's starts first p50"]]
    for mode in MODES:
        rows = rounds[mode]
        slots = [r["slots"] for r in rows]
        seconds = [r["seconds"] for r in rows]
        medians[mode] = {"slots": statistics.median(slots), "seconds": statistics.median(seconds)}
        table.append(
            [
                f"{mode} (PUBLISHING_RATE_LIMIT_FAIR={'true' if mode == 'fair' else 'false'})",
                str(len(rows)),
                f"{medians[mode]['slots']:g}",
                str(max(slots)),
                f"{medians[mode]['seconds']:.1f}",
                f"{max(seconds):.1f}",
                f"{statistics.median(r['alice_before'] for r in rows):g}",
            ]
        )
    fair, unfair = medians["fair"], medians["first come"]
    table.append(
        [
            "ratio first come / fair",
            "",
            f"{ratio(unfair['slots'], fair['slots']):.1f}x",
            "",
            f"{ratio(unfair['seconds'], fair['seconds']):.1f}x",
            "",
            "",
        ]
    )
    worst = max(r["slots"] for r in rounds["fair"])
    targets = [
        Target(
            "another owner's publishing starts within one free slot of a backlog",
            f"fair: {worst} slot(s) at most, median {fair['seconds']:.1f} s "
            f"(first come: median {unfair['slots']:g} slots, {unfair['seconds']:.1f} s)",
            worst <= 1,
        )
    ]
    full = all(r["usage_at_ask"] >= plan.limit for mode in MODES for r in rounds[mode])
    logs = figures["logs"]
    window = "full in every round" if full else "NOT full in every round"
    kept, fair_tracebacks, unfair_tracebacks = (
        logs["fair"]["kept"],
        logs["fair"]["tracebacks"],
        logs["first come"]["tracebacks"],
    )
    notes = [
        f"{plan.rate}; each round: alice's {plan.backlog} publishings (her first {plan.limit} spread over "
        f"the window, the rest at once), then bob's one, with the window {window}; rounds alternate "
        f"between the two deployments; one worker host each, rundramatiq --processes {plan.processes} "
        f"--threads {plan.threads}.",
        "Free slots: grants after bob's publishing was queued, his own included (1: the first slot that "
        "freed was his). Seconds: from queued to his grant, on one machine's clock; with the window full "
        f"the first slot frees within {plan.window_s / plan.limit:g} s.",
        f"Deferrals that kept a free slot for another owner: {kept} (fair); tracebacks in the workers' "
        f"logs: {fair_tracebacks} (fair), {unfair_tracebacks} (first come).",
    ]
    return Outcome(
        title=f"Rate-limit fairness: a backlog of {plan.backlog} against one publishing, {plan.rate}",
        table=table,
        targets=targets,
        figures=figures,
        notes=notes,
    )


if __name__ == "__main__":
    if sys.argv[1:2] != ["round"] or len(sys.argv) != 6:
        sys.exit("usage: python -m bench.fairness round TAG LIMIT WINDOW_S BACKLOG")
    tag, limit, window_s, backlog = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    print(json.dumps(play_round(tag, limit, window_s, backlog)))
