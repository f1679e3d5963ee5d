"""Scale curve: the fleet bench at several sizes, Whatsminers and XMRig 4:1 (issue 14, item 6).

`python -m bench.scale` runs `bench.fleet` once per size (250, 1,000, 2,500, 5,000, 10,000
devices; `--sizes` to choose), each in a fresh set of processes, with the fleet phase only (no
Whatsminer-only phase, no references), and collects per size: CPU per poll, RSS per device, poll
duration p99 per kind, missed cycles, achieved vs configured polls/s and command p99. It writes
`scale.json`, `scale.md` and `scale.png` to `--out` (bench/results/scale).

Every size needs one loopback address per Whatsminer (127.1.0.1 upwards: 10,000 devices use
127.1.0.1-127.1.31.64) and, in the agent, one file descriptor per open device connection; the
simulators raise their own limit (`raise_open_file_limit`), and this process raises its soft
limit to the hard one so that the processes it starts inherit it.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.analysis import COMMAND_P99_TARGET_MS
from bench.procs import REPO

SIZES = (250, 1000, 2500, 5000, 10000)
WHATSMINER_SHARE = 0.8  # 4 Whatsminers to 1 XMRig

KEEPS_UP = 0.98  # achieved polls/s at least this share of the configured rate


def split(size: int) -> tuple[int, int]:
    whatsminers = round(size * WHATSMINER_SHARE)
    return whatsminers, size - whatsminers


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    whatsminers, xmrig = split(size)
    out = args.out / str(size)
    command = [
        sys.executable,
        "-m",
        "bench.fleet",
        "--whatsminers",
        str(whatsminers),
        "--xmrig",
        str(xmrig),
        "--duration",
        str(args.duration),
        "--commands",
        str(args.commands),
        "--ratio-duration",
        "0",
        "--no-references",
        "--startup-timeout",
        str(args.startup_timeout),
        "--out",
        str(out),
    ]
    print(f"scale: {size} devices: {shlex.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, check=False)
    results = out / "results.json"
    if done.returncode != 0 or not results.exists():
        return {"devices": size, "error": f"bench.fleet exited {done.returncode}"}
    return point(size, json.loads(results.read_text()))


def point(size: int, figures: dict[str, Any]) -> dict[str, Any]:
    fleet = figures["fleet"]
    rss = fleet.get("peak_rss_mb")
    commands = fleet.get("commands", {}).get("all", {}).get("to_result_ms", {})
    configured = fleet["configured_polls_per_s"]
    achieved = fleet["achieved_polls_per_s"]
    startup = fleet.get("startup", {})
    return {
        "devices": size,
        "whatsminers": figures["config"]["whatsminers"],
        "xmrig": figures["config"]["xmrig"],
        "configured_polls_per_s": configured,
        "achieved_polls_per_s": achieved,
        "keeps_up": achieved >= KEEPS_UP * configured and fleet["missed_cycles_window"] == 0,
        "cpu_core_share": fleet["cpu_core_share"],
        "cpu_ms_per_poll": fleet["cpu_ms_per_poll"],
        "peak_rss_mb": rss,
        "rss_kb_per_device": round(1024 * rss / size, 1) if rss else None,
        "poll_p99_ms": {kind: v.get("p99") for kind, v in fleet["poll_ms"].items()},
        "missed_cycles_window": fleet["missed_cycles_window"],
        "missed_cycles_total": fleet["missed_cycles_total"],
        "failed_polls_total": fleet["failed_polls_total"],
        "command_p99_ms": commands.get("p99"),
        "startup": {k: v for k, v in startup.items() if not isinstance(v, list | dict)},
    }


def markdown(points: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Scale curve",
        "",
        f"`{args.command}`: one `bench.fleet` run per size, {args.duration:g} s window, "
        f"{args.commands} commands, 10 s polls, Whatsminers : XMRig = 4 : 1.",
        "",
        "| devices | polls/s achieved / configured | CPU (cores) | CPU ms/poll | peak RSS MB "
        "| RSS kB/device | poll p99 ms (whatsminer / xmrig) | missed cycles (window / run) "
        f"| command p99 ms (< {COMMAND_P99_TARGET_MS:g}) | keeps up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        if "error" in p:
            lines.append(f"| {p['devices']} | {p['error']} |||||||||")
            continue
        p99 = p["poll_p99_ms"]
        command = p["command_p99_ms"]
        met = "" if command is None else (" ✓" if command < COMMAND_P99_TARGET_MS else " ✗")
        lines.append(
            f"| {p['devices']} | {p['achieved_polls_per_s']:g} / {p['configured_polls_per_s']:g} "
            f"| {p['cpu_core_share']:g} | {p['cpu_ms_per_poll']} | {p['peak_rss_mb']} "
            f"| {p['rss_kb_per_device']} | {p99.get('whatsminer')} / {p99.get('xmrig')} "
            f"| {p['missed_cycles_window']} / {p['missed_cycles_total']} "
            f"| {command}{met} | {'yes' if p['keeps_up'] else 'no'} |"
        )
    return "\n".join([*lines, "", *targets(points)]) + "\n"


def targets(points: list[dict[str, Any]]) -> list[str]:
    """Issue 14's scale targets beside what this run measured."""
    measured = [p for p in points if "error" not in p]
    kept = [p for p in measured if p["keeps_up"]]
    largest = max((p["devices"] for p in kept), default=None)
    within = [p for p in measured if largest is not None and p["devices"] <= largest]
    slow = [
        p
        for p in within
        if p["command_p99_ms"] is None or p["command_p99_ms"] >= COMMAND_P99_TARGET_MS
    ]
    rows = [
        (
            f"largest size one agent keeps up with (≥ {KEEPS_UP:.0%} of the configured polls/s, "
            "0 missed cycles in the window)",
            "none" if largest is None else f"{largest:,} devices",
            None,
        ),
        (
            f"command p99 < {COMMAND_P99_TARGET_MS:g} ms at every size up to that",
            ", ".join(f"{p['devices']:,}: {p['command_p99_ms']} ms" for p in within) or "-",
            bool(within) and not slow,
        ),
    ]
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    for target, value, met in rows:
        verdict = "" if met is None else ("met" if met else "**not met**")
        lines.append(f"| {target} | {value} | {verdict} |")
    return lines


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [p for p in points if "error" not in p]
    sizes = [p["devices"] for p in good]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [
        (axes[0][0], "CPU per poll (ms)", [[p["cpu_ms_per_poll"] for p in good]], ["all kinds"]),
        (axes[0][1], "peak RSS per device (kB)", [[p["rss_kb_per_device"] for p in good]], [""]),
        (
            axes[1][0],
            "poll duration p99 (ms)",
            [[p["poll_p99_ms"].get(k) for p in good] for k in ("whatsminer", "xmrig")],
            ["whatsminer", "xmrig"],
        ),
        (
            axes[1][1],
            "missed cycles in the window; command p99 (ms)",
            [[p["missed_cycles_window"] for p in good], [p["command_p99_ms"] for p in good]],
            ["missed cycles", "command p99 ms"],
        ),
    ]
    for axis, title, series, labels in panels:
        for values, label in zip(series, labels, strict=True):
            axis.plot(sizes, values, marker="o", label=label or None)
        axis.set_title(title)
        axis.set_xscale("log")
        axis.set_xticks(sizes, [f"{n:,}" for n in sizes])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
        if any(labels):
            axis.legend()
    for axis in axes[1]:
        axis.set_yscale("symlog", linthresh=10)  # ms and counts span 10 to 10^4
        axis.set_ylim(bottom=0)
        axis.set_xlabel("devices (Whatsminers : XMRig = 4 : 1)")
    fig.suptitle("edge-agent, one process, 10 s polls (shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--duration", type=float, default=60.0, help="window per size, s (60)")
    parser.add_argument("--commands", type=int, default=100, help="commands per window (100)")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument(
        "--budget", type=float, help="start no further size after this many seconds (no limit)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale")
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "-m", "bench.scale", *(argv or sys.argv[1:])])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    limit = raise_fd_limit()
    if limit < 2 * max(args.sizes) + 1000:
        print(f"scale: open file limit {limit} is low for {max(args.sizes)} devices", flush=True)
    points: list[dict[str, Any]] = []
    started = time.monotonic()
    for size in args.sizes:
        if args.budget is not None and time.monotonic() - started > args.budget:
            points.append({"devices": size, "error": f"not run: past --budget {args.budget:g} s"})
            continue
        points.append(run_size(size, args))
        # after every size, so that a later size that fails leaves the earlier ones written
        (args.out / "scale.json").write_text(json.dumps(points, indent=2) + "\n")
        (args.out / "scale.md").write_text(markdown(points, args))
    plot(points, args.out / "scale.png")
    print((args.out / "scale.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
