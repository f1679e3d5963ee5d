"""`edge-agent scan CIDR|RANGE … [--write CONFIG]`: the table of what answered, and the merge."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from agent.devices.whatsminer.client import DEFAULT_PORT as WHATSMINER_PORT
from agent.tools import table
from agent.tools.configwrite import TEMPLATE_FIELDS, WriteError, merge_into, parse_templates
from agent.tools.open_files import raise_open_file_limit
from agent.tools.progress import Progress
from agent.tools.scan import (
    DEFAULT_HTTP_PORTS,
    MAX_ADDRESSES,
    SRS_PORT,
    Found,
    Scanner,
    TargetError,
    expand_targets,
)

HEADERS = ("KIND", "ADDRESS", "MODEL", "VERSION", "AUTH")


def add_scan_parser(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=cmd_scan)
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="what to scan: 192.168.1.0/24, 192.168.1.10-192.168.1.50, 192.168.1.10-50, "
        "or one address",
    )
    parser.add_argument(
        "--ports",
        type=_ports,
        default=DEFAULT_HTTP_PORTS,
        help="HTTP ports for XMRig and pool APIs, comma separated (default: "
        f"{','.join(map(str, DEFAULT_HTTP_PORTS))}); Whatsminer {WHATSMINER_PORT} and SRS "
        f"{SRS_PORT} are always tried",
    )
    parser.add_argument("--timeout", type=float, default=1.5, help="seconds per probe step (1.5)")
    parser.add_argument("--concurrency", type=int, default=256, help="probes at once (256)")
    parser.add_argument("--json", action="store_true", help="print the devices found as JSON")
    parser.add_argument("--write", type=Path, metavar="CONFIG", help="add new devices to CONFIG")
    parser.add_argument(
        "--id-template",
        action="append",
        default=[],
        metavar="[KIND=]TEMPLATE",
        help="device ids for --write, e.g. wm-{ip} or whatsminer=rack1-{last}; "
        f"fields: {TEMPLATE_FIELDS}",
    )
    parser.add_argument(
        "--allow-large",
        action="store_true",
        help=f"scan more than {MAX_ADDRESSES} addresses",
    )


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: ports are numbers, like 80,8080,44444"
        ) from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"{text!r}: ports are 1-65535")
    return ports


def cmd_scan(args: argparse.Namespace) -> int:
    try:
        templates = parse_templates(args.id_template)
        hosts = expand_targets(args.targets, limit=None if args.allow_large else MAX_ADDRESSES)
    except (TargetError, WriteError) as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return 2
    if args.timeout <= 0 or args.concurrency < 1:
        print("scan: --timeout must be above 0 and --concurrency at least 1", file=sys.stderr)
        return 2
    raise_open_file_limit()
    scanner = Scanner(
        http_ports=args.ports,
        timeout=args.timeout,
        concurrency=args.concurrency,
        progress=Progress(sys.stderr, "scan"),
    )
    started = time.monotonic()
    found = asyncio.run(scanner.scan(hosts))
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps([f.as_dict() for f in found], indent=2))
    elif found:
        print(table.render(HEADERS, [_row(f) for f in found]))
    stats = scanner.stats
    print(
        f"{len(found)} devices on {len(hosts)} addresses in {elapsed:.1f}s "
        f"({stats.open_ports} open ports, {stats.unknown} of them no known device)",
        file=sys.stderr,
    )
    if args.write is not None:
        return _write(args.write, found, templates)
    return 0


def _row(found: Found) -> tuple[str | None, ...]:
    return (found.kind, found.address, found.model, found.version, found.auth)


def _write(path: Path, found: list[Found], templates: dict[str, str]) -> int:
    try:
        report = merge_into(path, found, templates)
    except (OSError, WriteError, ValueError) as exc:
        print(f"scan: cannot update {path}: {exc}", file=sys.stderr)
        return 1
    for address, device_id in report.already:
        print(f"{path}: {address} is already there as {device_id}", file=sys.stderr)
    added = ", ".join(report.added[:5]) + (", …" if len(report.added) > 5 else "")
    print(f"{path}: added {len(report.added)} devices ({added or 'none'})", file=sys.stderr)
    if report.added:
        print(f"next: edge-agent check-config -c {path}", file=sys.stderr)
    return 0
