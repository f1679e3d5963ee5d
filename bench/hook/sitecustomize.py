"""Bench instrumentation for the agent process, loaded only when the bench puts this folder on
PYTHONPATH and sets EDGE_AGENT_BENCH_HOOK=1; the agent's own code is not changed.

It adds a `bench` entry to the bridge `health` response: the duration of each poll since the
previous health request, per kind (the worker's own `stats.last_duration_ms`, collected here
as the worker records it, drained by the health request), and the depth of paho's outgoing
queue. Its cost (a deque append per poll, one pass over the workers per health request) is
counted in the agent's CPU like everything else.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
import tracemalloc
import weakref
from collections import deque
from pathlib import Path
from typing import Any

TRACE_FRAMES = 8
RECENT_POLLS = 64  # per worker between two health requests (one poll interval: a few)

# the garbage collector's pauses since the previous health request: (generation, ms)
_gc_pauses: deque[tuple[int, float]] = deque(maxlen=1000)
_gc_started: list[float] = [0.0]

# worker -> its recent poll durations (ms); weak, so that a reload's old workers go away
_durations: weakref.WeakKeyDictionary[Any, deque[float]] = weakref.WeakKeyDictionary()


def _bench_figures(agent: Any) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    for worker in agent.workers.values():
        durations = _durations.get(worker, ())
        by_kind.setdefault(worker.config.kind, []).extend(round(d, 2) for d in durations)
        _durations.pop(worker, None)
    client = agent.link.client
    figures: dict[str, Any] = {
        "poll_ms_by_kind": by_kind,
        "mqtt_out_queue": len(getattr(client, "_out_messages", ())),
        "gc_pauses_ms": _drain_gc_pauses(),
        "gc_frozen": gc.get_freeze_count(),
        "gc_oldest_generation": len(gc.get_objects(2)),
    }
    return figures


def _dump_memory(signum: int, frame: Any) -> None:
    path = os.environ["EDGE_AGENT_BENCH_TRACEMALLOC"]
    Path(path).write_text(json.dumps(_memory_top()))


def _memory_top(count: int = 15) -> dict[str, Any]:
    """The memory held now, by the innermost line of the agent's own code that allocated it
    (or of the library, when no agent frame is on the stack), and the top call paths."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snapshot.statistics("traceback")
    by_site: dict[str, list[int]] = {}
    for stat in stats:
        site = _site(stat.traceback)
        entry = by_site.setdefault(site, [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    top_sites = sorted(by_site.items(), key=lambda item: -item[1][0])[:count]
    by_module: dict[str, int] = {}
    for site, (size, _) in by_site.items():
        module = site.rsplit(":", 1)[0]
        by_module[module] = by_module.get(module, 0) + size
    return {
        "traced_mb": round(sum(s.size for s in stats) / 2**20, 2),
        # every traced byte, by the file of the site above (module code at import is importlib's)
        "by_module": [
            {"mb": round(size / 2**20, 2), "module": module}
            for module, size in sorted(by_module.items(), key=lambda item: -item[1])[:30]
        ],
        "by_agent_line": [
            {"mb": round(size / 2**20, 2), "blocks": blocks, "at": site}
            for site, (size, blocks) in top_sites
        ],
        "paths": [
            {
                "mb": round(stat.size / 2**20, 2),
                "blocks": stat.count,
                "at": [_short(f.filename, f.lineno) for f in stat.traceback],
            }
            for stat in stats[:count]
        ],
    }


def _site(traceback: tracemalloc.Traceback) -> str:
    for frame in reversed(traceback):  # oldest frame first: search from the innermost
        if "/agent/" in frame.filename:
            return _short(frame.filename, frame.lineno)
    return _short(traceback[-1].filename, traceback[-1].lineno) if len(traceback) else "?"


def _short(filename: str, lineno: int) -> str:
    return f"{'/'.join(filename.split('/')[-3:])}:{lineno}"


def _drain_gc_pauses() -> list[list[float]]:
    """popleft, not iteration: a collection may append while this runs."""
    drained = []
    while _gc_pauses:
        generation, ms = _gc_pauses.popleft()
        drained.append([generation, round(ms, 2)])
    return drained


def _time_gc(phase: str, info: dict[str, Any]) -> None:
    """A collection stops the event loop: its pauses are what a command can wait behind."""
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _gc_pauses.append((info["generation"], 1000 * (time.perf_counter() - _gc_started[0])))


def install() -> None:
    gc.callbacks.append(_time_gc)
    from agent.runtime.service import AgentService
    from agent.runtime.worker import DeviceWorker

    original_record = DeviceWorker._record_duration

    # The worker's own duration bookkeeping, not a wrapper around its poll coroutine: another
    # coroutine frame per poll would be counted as the agent's CPU.
    def record_duration(self: Any, started: float) -> None:
        original_record(self, started)
        recent = _durations.get(self)
        if recent is None:
            recent = _durations[self] = deque(maxlen=RECENT_POLLS)
        recent.append(self.stats.last_duration_ms)

    DeviceWorker._record_duration = record_duration  # type: ignore[method-assign]
    original = AgentService.health

    def health(self: Any) -> dict[str, Any]:
        figures = original(self)
        figures["bench"] = _bench_figures(self)
        return figures

    AgentService.health = health  # type: ignore[method-assign]


if os.environ.get("EDGE_AGENT_BENCH_HOOK") == "1":
    if os.environ.get("EDGE_AGENT_BENCH_TRACEMALLOC"):
        # Where the memory goes: SIGUSR2 writes the top call paths to the file named by the
        # variable. Tracing slows the agent several times over: such a run's CPU means nothing.
        tracemalloc.start(TRACE_FRAMES)
        signal.signal(signal.SIGUSR2, _dump_memory)
    install()
