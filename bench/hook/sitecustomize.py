"""Bench instrumentation for the agent process, loaded only when the bench puts this folder on
PYTHONPATH and sets EDGE_AGENT_BENCH_HOOK=1; the agent's own code is not changed.

It adds a `bench` entry to the bridge `health` response: the poll durations each worker
recorded since the previous health request (PollStats.durations_ms, drained here) per kind,
and the depth of paho's outgoing queue. Its cost (one pass over the workers per
health request, every poll interval) is counted in the agent's CPU like everything else.
"""

from __future__ import annotations

import os
from typing import Any


def _bench_figures(agent: Any) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    for worker in agent.workers.values():
        durations = worker.stats.durations_ms
        by_kind.setdefault(worker.config.kind, []).extend(round(d, 2) for d in durations)
        durations.clear()
    client = agent.link.client
    return {
        "poll_ms_by_kind": by_kind,
        "mqtt_out_queue": len(getattr(client, "_out_messages", ())),
    }


def install() -> None:
    from agent.runtime.agent import Agent

    original = Agent.health

    def health(self: Any) -> dict[str, Any]:
        figures = original(self)
        figures["bench"] = _bench_figures(self)
        return figures

    Agent.health = health  # type: ignore[method-assign]


if os.environ.get("EDGE_AGENT_BENCH_HOOK") == "1":
    install()
