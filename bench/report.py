"""results.json, results.md and the PNG plots of a bench run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

MET = {True: "met", False: "**not met**", None: "n/a"}


def write(out: Path, figures: dict[str, Any]) -> None:
    if figures["config"].get("profiled"):
        for name in ("fleet-startup", "fleet"):
            profile = out / f"profile-{name}.txt"
            if profile.exists():
                figures.setdefault("profile", {})[name] = profile_summary(profile)
    (out / "results.json").write_text(json.dumps(figures, indent=1) + "\n")
    (out / "results.md").write_text(markdown(figures))
    plot_latency(out / "command_latency.png", figures)
    plot_cycles(out / "poll_cycles.png", figures)


# ---------------------------------------------------------------- markdown


def _ms(p: dict[str, Any]) -> str:
    if not p.get("count"):
        return "-"
    return f"{p['p50']:g} / {p['p95']:g} / {p['p99']:g} / {p['max']:g}"


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def markdown(f: dict[str, Any]) -> str:
    c, main, machine = f["config"], f["fleet"], f.get("machine", {})
    lines = [
        "# edge-agent fleet benchmark",
        "",
        f"`{f.get('command', 'python -m bench.fleet')}` — {f['started']}, "
        f"{machine.get('cpus')} CPUs ({machine.get('cpu_model')}), Python {machine.get('python')}"
        f"{', profiled with py-spy' if c['profiled'] else ''}; {_tree(f.get('tree'))}.",
        f"Fleet: {c['whatsminers']:,} Whatsminers + {c['xmrig']:,} XMRig, poll interval "
        f"{c['poll_interval_s']:g} s, measured window {main['window_s']:g} s, "
        f"{c['commands']} commands.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['value']} | {MET[t['met']]} |" for t in f["targets"]]
    lines += ["", *_fleet_table(main), "", *_cpu_table(f), "", *_mqtt_table(main)]
    for name, profile in f.get("profile", {}).items():
        lines += ["", *_profile_table(name, profile)]
    return "\n".join(lines) + "\n"


def _tree(tree: dict[str, Any] | None) -> str:
    if not tree:
        return "tree unknown"
    changed = tree.get("agent_files_changed") or []
    dirty = f" + uncommitted changes to {', '.join(changed)}" if changed else ""
    return f"agent at commit {tree.get('commit')}{dirty}"


def _fleet_table(m: dict[str, Any]) -> list[str]:
    s, mq, cmd = m["startup"], m["mqtt"], m["commands"]
    rows = [
        (
            "device polls per second, achieved / configured",
            f"{m['achieved_polls_per_s']:g} / {m['configured_polls_per_s']:g}",
        ),
        (
            "missed cycles, window / whole run",
            f"{m['missed_cycles_window']} / {m['missed_cycles_total']}",
        ),
        (
            "failed polls, window / whole run",
            f"{m['failed_polls_window']} / {m['failed_polls_total']}",
        ),
        ("agent CPU s per 1,000 device polls", _num(m["cpu_s_per_1000_polls"])),
        ("agent CPU, share of one core", _num(m["cpu_core_share"])),
        ("agent CPU spent in the kernel (system time)", _num(m.get("cpu_kernel_share"))),
        ("agent peak RSS (VmHWM)", _num(m["peak_rss_mb"], " MB")),
    ]
    for kind, p in m["poll_ms"].items():
        rows.append((f"poll duration ms p50/p95/p99/max ({kind})", _ms(p)))
    rows += [
        ("startup: bridge online", _num(s.get("bridge_online_s"), " s")),
        (
            "startup: every device's first state",
            _num(s.get("all_first_states_s"), " s")
            + f" ({s.get('devices_with_state')}/{s.get('devices')} devices)",
        ),
        (
            "startup: every discovery topic",
            _num(s.get("all_discovery_s"), " s")
            + f" ({s.get('discovery_topics_missing'):,} of {s.get('discovery_topics_expected'):,} "
            "never arrived)",
        ),
        (
            "MQTT on change: messages / bytes per min",
            f"{mq['on_change']['messages_per_min']:,} / {mq['on_change']['bytes_per_min']:,}",
        ),
        (
            "MQTT every poll (computed): messages / bytes per min",
            f"{mq['every_poll']['messages_per_min']:,} / {mq['every_poll']['bytes_per_min']:,}",
        ),
        ("successful polls without a state publish", _num(mq["polls_without_state_publish"])),
        ("state publishes per 1 s bin, p50/p95/p99/max", _ms(mq.get("state_publishes_per_s", {}))),
    ]
    for group in ("all", "whatsminer", "xmrig", "first_write_to_device", "repeat_write"):
        if group in cmd:
            g = cmd[group]
            rows.append(
                (f"command ms to device, p50/p95/p99/max ({group})", _ms(g["to_device_ms"]))
            )
            rows.append(
                (f"command ms to result, p50/p95/p99/max ({group})", _ms(g["to_result_ms"]))
            )
    rows += [
        (
            "commands: ok / failed / no result / no write seen",
            f"{cmd['ok']} / {cmd['failed']} / {cmd['without_result']} / {cmd['without_write']}",
        ),
        ("health response ms p50/p95/p99/max", _ms(m["health_response_ms"])),
        ("paho outgoing queue, max seen at a health tick", _num(m["mqtt_out_queue_max"])),
        ("garbage collector pauses in the window (count, max ms)", _gc(m.get("gc_pauses_ms"))),
        ("simulators' CPU s during the phase (context)", _num(m.get("simulators_cpu_s"))),
    ]
    head = [
        f"## Fleet phase: {m['devices']:,} devices",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    return head + [f"| {a} | {b} |" for a, b in rows]


def _cpu_table(f: dict[str, Any]) -> list[str]:
    only = f.get("whatsminers_only") or (f["fleet"] if not f["config"]["xmrig"] else None)
    lines = [
        "## CPU per device poll, Whatsminers only",
        "",
        "| poller | requests per poll | CPU ms per poll | agent / this |",
        "|---|---|---|---|",
    ]
    if only:
        lines.append(
            f"| edge-agent ({only['devices']:,} Whatsminers, {only['window_s']:g} s, "
            f"{only['achieved_polls_per_s']:g} polls/s) | "
            f"{_requests_per_poll(only)} | {_num(only['cpu_ms_per_poll'])} | 1 |"
        )
    mine = (only or {}).get("cpu_ms_per_poll")
    for name, r in f["references"].items():
        if name.startswith("xmrig-asyncio"):
            continue  # an XMRig poll: compared in the per-kind table
        theirs = r.get("cpu_per_poll_ms")
        ratio = f"{mine / theirs:.2f}" if mine and theirs else "-"
        what = {
            "pyasic": f"pyasic {r.get('version', '')} get_data()",
            "bare": "bare socket, summary",
            "bare-agent": "bare socket, the agent's two reads",
            "bare-asyncio": "asyncio streams, summary",
            "bare-asyncio-agent": "asyncio streams, the agent's reads and connections",
            "bare-asyncio-agent-paced": (
                "the same, each miner once per poll interval "
                "(requests per poll count the unmeasured first round)"
            ),
        }.get(name, name)
        lines.append(
            f"| {what} | {_num(r.get('sim_requests_per_poll'))} | {_num(theirs)} | {ratio} |"
        )
    return [*lines, "", *_poll_cpu(f)]


def _poll_cpu(f: dict[str, Any]) -> list[str]:
    """Agent CPU per poll over a reference's, per kind, both measured in this run."""
    lines = [
        "## CPU per poll against the references, per kind (same run)",
        "",
        "| kind | reference | agent ms/poll | reference ms/poll | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in f.get("poll_cpu", ()):
        met = {True: "met", False: "**not met**", None: "not measured"}[row["met"]]
        if row["met"] is None and row["ratio"] is not None:
            met = "context"
        lines.append(
            f"| {row['target'].split()[0]} | {row['reference']} | {_num(row['agent_ms'])} | "
            f"{_num(row['reference_ms'])} | {_num(row['ratio'])} | ≤ {row['limit']:g}x | {met} |"
        )
    return lines


def _requests_per_poll(phase: dict[str, Any]) -> str:
    value = phase.get("sim_requests_per_poll")
    return _num(value)


def _mqtt_table(m: dict[str, Any]) -> list[str]:
    lines = [
        "## MQTT published by the agent during the window, by topic",
        "",
        "| topic | messages/min | bytes/min |",
        "|---|---|---|",
    ]
    for name, row in m["mqtt"]["by_topic"].items():
        lines.append(f"| {name} | {row['messages_per_min']:,} | {row['bytes_per_min']:,} |")
    return lines


# ---------------------------------------------------------------- profile


# Where a sample belongs: the first area (in this order) with a function on its stack.
AREAS = (
    ("health request + bench hook", ("_bench_figures", "_request_health")),
    (
        "commands (validation, token signing, write, result)",
        ("WorkerCommands.from_mqtt", "Driver.execute"),
    ),
    ("XMRig poll (requests, on worker threads)", ("XmrigDriver.poll", "BlockingDriver.poll")),
    ("Whatsminer poll: opening connections", ("WhatsminerClient._open",)),
    ("Whatsminer poll: json.loads of replies", ("parse_reply",)),
    ("Whatsminer poll: normalise", ("normalise",)),
    ("Whatsminer poll: send/read/close, timeouts", ("WhatsminerDriver.poll",)),
    ("state JSON encode + publish", ("Publisher.publish_state",)),
    ("discovery re-check after each poll", ("Announcer.announce_device",)),
    ("discovery configs built and handed over, paced", ("Announcer._step",)),
    ("MQTT retained pump + paho calls", ("MqttLink.", "Client.publish")),
    ("paho network thread", ("Client._thread_main",)),
    ("worker scheduling (sleep, wait_for, timeouts)", ("DeviceWorker._run",)),
    ("logging", ("structlog", "redact")),
    (
        "asyncio sockets: connect, read, close callbacks, epoll",
        ("_sock_connect", "Transport", "EpollSelector", "socket.", "_sock_write_done"),
    ),
)


def profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """py-spy raw output (`frame;frame;… count` per line) → the functions that hold the GIL
    most: self (leaf) and inclusive, in % of all samples, and the samples per area."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        areas[_area(stack)] += count

    def share(counter: Counter[str], limit: int | None = top) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 2)) for k, v in counter.most_common(limit)]

    return {
        "samples": total,
        "by_area_pct": share(areas, None),
        "self_pct": share(own),
        "inclusive_pct": share(inclusive),
    }


def _area(stack: str) -> str:
    for name, markers in AREAS:
        if any(marker in stack for marker in markers):
            return name
    return "event loop and the rest"


def _frame(text: str) -> str:
    """`func (path/to/file.py:123)` → `func (file.py)`; thread names dropped."""
    text = text.strip()
    if text.startswith(("process ", "thread ")):
        return ""
    name, _, where = text.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(where.split("/")[-2:])
    return f"{name} ({short})" if where else name


def _profile_table(name: str, p: dict[str, Any]) -> list[str]:
    what = "startup" if name.endswith("startup") else "the measured window"
    lines = [
        f"## Where the agent's time goes: {what} (py-spy --gil, {p['samples']:,} samples)",
        "",
        "| area | % of samples holding the GIL |",
        "|---|---|",
        *(f"| {area} | {pct} |" for area, pct in p.get("by_area_pct", [])),
        "",
        "| self % | function | | inclusive % | function |",
        "|---|---|---|---|---|",
    ]
    for (own, own_pct), (inc, inc_pct) in zip(
        p["self_pct"][:20], p["inclusive_pct"][:20], strict=False
    ):
        lines.append(f"| {own_pct} | {own} | | {inc_pct} | {inc} |")
    return lines


# ---------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(path: Path, f: dict[str, Any]) -> None:
    plt = _pyplot()
    samples = f["fleet"]["commands"]["samples"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in (
        (axes[0], "to_device_ms", "publish on set topic → simulator receives the write"),
        (axes[1], "to_result_ms", "publish on set topic → result message"),
    ):
        for kind in ("whatsminer", "xmrig"):
            values = sorted(s[key] for s in samples if s["kind"] == kind and s[key] is not None)
            if values:
                share = [100 * (i + 1) / len(values) for i in range(len(values))]
                ax.step(values, share, where="post", label=f"{kind} (n={len(values)})")
        ax.axvline(100, color="red", linestyle="--", linewidth=1, label="100 ms target")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("% of commands (cumulative)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Command latency while polling ({len(samples)} commands)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cycles(path: Path, f: dict[str, Any]) -> None:
    plt = _pyplot()
    phases = [("fleet", f["fleet"])]
    if f.get("whatsminers_only"):
        phases.append(("whatsminers only", f["whatsminers_only"]))
    fig, axes = plt.subplots(2, len(phases), figsize=(7 * len(phases), 7), squeeze=False)
    for column, (name, phase) in enumerate(phases):
        rows = [r for r in phase["timeline"] if r.get("poll_count")]
        t = [r["t"] for r in rows]
        top, bottom = axes[0][column], axes[1][column]
        for key in ("p50", "p95", "p99", "max"):
            top.plot(t, [r[f"poll_{key}"] for r in rows], marker=".", label=key)
        top.set_yscale("log")
        top.set_ylabel("poll duration per cycle, ms (log)")
        top.set_title(f"{name}: {phase['devices']:,} devices, one point per poll interval")
        top.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8)
        rated = [r for r in rows if "polls_per_s" in r]
        bottom.plot([r["t"] for r in rated], [r["polls_per_s"] for r in rated], label="achieved")
        bottom.axhline(
            phase["configured_polls_per_s"], color="grey", linestyle="--", label="configured"
        )
        share = bottom.twinx()
        share.plot(
            [r["t"] for r in rated],
            [100 * r["cpu_core_share"] for r in rated],
            color="tab:red",
            alpha=0.6,
            label="agent CPU % of a core",
        )
        share.set_ylabel("agent CPU, % of one core")
        window = [r["t"] for r in rows if r.get("in_window")]
        if window:
            for ax in (top, bottom):
                ax.axvspan(min(window), max(window), color="green", alpha=0.06)
        bottom.set_xlabel("seconds since the agent started (shaded: measured window)")
        bottom.set_ylabel("device polls per second")
        bottom.grid(True, alpha=0.3)
        bottom.legend(loc="lower left", fontsize=8)
        share.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gc(pauses: dict[str, Any] | None) -> str:
    if not pauses:
        return "none recorded"
    text = "; ".join(
        f"{generation}: {p['count']}, max {p['max_ms']:.1f}"
        for generation, p in pauses.items()
        if generation.startswith("gen")
    )
    return (
        f"{text or 'none'} (objects in the oldest generation ≤ "
        f"{pauses.get('oldest_generation_max', 0):,}, frozen {pauses.get('frozen_end', 0):,})"
    )
