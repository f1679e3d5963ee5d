"""Devices from the config: `[[devices]]`, `[defaults.<kind>]` and `[[groups]]` of addresses.

A group expands an address list, range or network into devices of one kind, named by an id
template (`id = "wm-{ip}"`). Each device's fields come from, highest first: the environment
(`EDGE_AGENT_DEVICE__<ID>__<FIELD>`), its own `[[devices]]` entry (an entry whose id is a
group device's id refines that device), its group, `[defaults.<kind>]`, the kind's defaults.

Every field remembers the table it came from, so that a value written once is reported once,
where it was written, and not again for each of 2,000 devices. Every problem is collected:
field errors, unknown commands, duplicate ids and two devices on one address alike.
"""

from __future__ import annotations

import ipaddress
import json
import re
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from agent.config.base import DeviceConfig, error_path_and_message
from agent.devices.kind import DeviceKind

DEVICE_ENV_PREFIX = "EDGE_AGENT_DEVICE__"
DEFAULTS_ENV_PREFIX = "EDGE_AGENT_DEFAULTS__"
GROUP_KEYS = ("kind", "id", "hosts", "exclude", "ports")
PLACEHOLDERS = ("ip", "host", "port", "index")
TEMPLATED = ("id", "name", "url", "host", "port")  # differ per device: one line per group
MAX_GROUP_DEVICES = 65_536
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE,
)
_NOT_SLUG = re.compile(r"[^a-z0-9_-]")
_NOT_DEFAULTS = {"id": "an id is per device", "kind": "the table's name is the kind"}
_NOT_IN_GROUPS = {"host": "a group's addresses go in hosts"}
HOSTS_HELP = (
    "a list of addresses, ranges (10.0.1.10-10.0.1.250 or 10.0.1.10-250), "
    "networks (10.0.1.0/24) or host names"
)


@dataclass(slots=True)
class Entry:
    """One device before validation: its fields and, per field, the table that set it."""

    values: dict[str, Any]
    table: str  # `devices[3]` or `groups[0]`: where the device is written
    label: str  # the table with its id, where problems about the whole device go
    origins: dict[str, str] = field(default_factory=dict)
    pinned: dict[str, Any] = field(default_factory=dict)  # the address its group gave it
    group: str | None = None

    def set(self, fields: Mapping[str, Any], origin: str) -> None:
        self.values.update(fields)
        self.origins.update(dict.fromkeys(fields, origin))

    def origin(self, name: Any) -> str:
        return self.origins.get(name, self.label) if isinstance(name, str) else self.label

    @property
    def id(self) -> str:
        return str(self.values.get("id"))


@dataclass(frozen=True, slots=True)
class GroupSummary:
    label: str
    kind: str
    count: int
    first: str
    last: str


@dataclass(slots=True)
class Fleet:
    devices: list[DeviceConfig]
    broken: set[str]  # ids of entries that have problems (so power members skip them)
    problems: list[str]
    groups: list[GroupSummary]


@dataclass(slots=True)
class _Line:
    text: str
    count: int
    first: str


class Report:
    """Problems in the order found; one line per table and field, however many devices share
    it (`(250 devices, first wm-10-0-1-10)`)."""

    def __init__(self, kinds: Mapping[str, DeviceKind]) -> None:
        self._lines: dict[tuple[str, ...], _Line] = {}
        self.kinds = kinds  # the kinds the fleet may use, handed in by the composition root

    def note(self, text: str) -> None:
        self._lines.setdefault((text,), _Line(text, 1, ""))

    def __len__(self) -> int:
        return len(self._lines)

    def add(
        self, origin: str, path: str, message: str, device: str, same: str | None = None
    ) -> None:
        """`same`: what makes two devices' problems one line (default: field and message)."""
        text = f"{origin}.{path}: {message}" if path else f"{origin}: {message}"
        templated = path.partition(".")[0].partition("[")[0] in TEMPLATED
        key = (origin, path, same or ("" if templated and path else message))
        line = self._lines.get(key)
        if line is None:
            self._lines[key] = _Line(text, 1, device)
        elif line.first != device:
            line.count += 1

    def lines(self) -> list[str]:
        return [
            line.text + (f" ({line.count} devices, first {line.first})" if line.count > 1 else "")
            for line in self._lines.values()
        ]


def build_fleet(
    data: dict[str, Any], environ: Mapping[str, str], kinds: Mapping[str, DeviceKind]
) -> Fleet:
    """Take `devices`, `groups` and `defaults` out of the file's data; validate every device."""
    report = Report(kinds)
    defaults = _read_defaults(data.pop("defaults", {}), environ, report)
    entries, groups = _group_entries(data.pop("groups", []), defaults, report)
    standalone = _device_entries(data.pop("devices", []), entries, defaults, report)
    entries = standalone + entries
    _apply_device_env(entries, environ, report)
    broken: set[str] = set()
    first: dict[str, Entry] = {}
    addresses: dict[tuple[str, int], Entry] = {}
    devices: list[DeviceConfig] = []
    for entry in entries:
        device = _validated(entry, report)
        twice = _duplicate_id(entry, first, report)
        clash = not twice and _overlap(entry, addresses, report)  # a duplicate is told once
        if device is None or twice or clash:
            broken.add(entry.id)
        else:
            devices.append(device)
    return Fleet(devices, broken, report.lines(), groups)


def kind_problem(entry: Mapping[str, Any], kinds: Mapping[str, DeviceKind]) -> str | None:
    kind = entry.get("kind")
    if isinstance(kind, str) and kind in kinds:
        return None
    known = ", ".join(sorted(kinds))
    return f"missing; use one of {known}" if kind is None else f"{kind!r} is not one of {known}"


# defaults ----------------------------------------------------------------------------------


def _read_defaults(
    raw: Any, environ: Mapping[str, str], report: Report
) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        report.note("defaults: must be tables like [defaults.whatsminer]")
        return {}
    defaults: dict[str, dict[str, Any]] = {}
    kinds = report.kinds
    for kind, table in raw.items():
        where = f"defaults.{kind}"
        if kind not in kinds:
            report.note(f"{where}: {kind!r} is not a kind; use one of {', '.join(sorted(kinds))}")
        elif not isinstance(table, dict):
            report.note(f"{where}: must be a table of device fields")
        else:
            defaults[kind] = _known_fields(kinds[kind], table, where, report, _NOT_DEFAULTS)
    for name, value in environ.items():
        if name.startswith(DEFAULTS_ENV_PREFIX):
            kind, _, key = name[len(DEFAULTS_ENV_PREFIX) :].lower().partition("__")
            if kind in kinds and key in kinds[kind].config.model_fields:
                defaults.setdefault(kind, {})[key] = _env_value(value)
            else:
                report.note(f"{name} names no device kind and field")
    return defaults


def _known_fields(
    kind: DeviceKind,
    table: Mapping[str, Any],
    where: str,
    report: Report,
    refused: Mapping[str, str],
) -> dict[str, Any]:
    """The table's device fields; a misspelt or misplaced one (`refused`: why) is a problem."""
    fields = {}
    for key, value in table.items():
        if key in refused:
            report.note(f"{where}.{key}: {refused[key]}")
        elif key not in kind.config.model_fields:
            report.note(
                f"{where}.{key}: unknown field (check the spelling against config.example.toml)"
            )
        else:
            fields[key] = value
    return fields


# groups ------------------------------------------------------------------------------------


def _group_entries(
    raw: Any, defaults: Mapping[str, dict[str, Any]], report: Report
) -> tuple[list[Entry], list[GroupSummary]]:
    if not isinstance(raw, list):
        report.note("groups: must be a list of [[groups]] tables")
        return [], []
    entries: list[Entry] = []
    summaries: list[GroupSummary] = []
    for index, table in enumerate(raw):
        made = _expand_group(index, table, defaults, report)
        if made:
            entries.extend(made)
            first, last = made[0].pinned, made[-1].pinned
            summaries.append(
                GroupSummary(
                    made[0].label,
                    made[0].values["kind"],
                    len(made),
                    _address(first),
                    _address(last),
                )
            )
    return entries, summaries


def _expand_group(
    index: int, table: Any, defaults: Mapping[str, dict[str, Any]], report: Report
) -> list[Entry]:
    where = f"groups[{index}]"
    if not isinstance(table, dict):
        report.note(f"{where}: must be a [[groups]] table")
        return []
    template = table.get("id")
    label = f"{where} ({template})" if isinstance(template, str) else where
    problem = kind_problem(table, report.kinds)
    if problem:
        report.note(f"{label}.kind: {problem}")
        return []
    kind = report.kinds[table["kind"]]
    fields = _known_fields(kind, _without(table, GROUP_KEYS), label, report, _NOT_IN_GROUPS)
    addresses = _group_addresses(table, label, report)
    if not isinstance(template, str) or not template:
        report.note(
            f"{label}.id: missing; a template like '{kind.name}-{{ip}}' gives each "
            "device its id ({ip}, {port}, {index})"
        )
        return []
    group = Group(kind, where, label, template, defaults.get(kind.name, {}), fields)
    return group.devices(addresses, report)


def _group_addresses(
    table: Mapping[str, Any], label: str, report: Report
) -> list[tuple[str, int | None]]:
    hosts = _hosts(table.get("hosts"), f"{label}.hosts", report, required=True)
    excluded = set(_hosts(table.get("exclude"), f"{label}.exclude", report, required=False))
    ports = _ports(table.get("ports"), f"{label}.ports", report)
    twice = [host for host, n in Counter(hosts).items() if n > 1]
    if twice:
        more = f" (and {len(twice) - 1} more)" if len(twice) > 1 else ""
        report.note(f"{label}.hosts: {twice[0]} is listed twice{more}")
    addresses = [(h, p) for h in hosts if h not in excluded for p in ports]
    if len(addresses) > MAX_GROUP_DEVICES:
        report.note(
            f"{label}.hosts: {len(addresses)} devices; a group holds at most "
            f"{MAX_GROUP_DEVICES} (check the range or the network's prefix)"
        )
        return []
    return addresses


@dataclass(frozen=True, slots=True)
class Group:
    """One `[[groups]]` table: what its devices share, and how each gets its own fields."""

    kind: DeviceKind
    table: str
    label: str
    template: str
    defaults: Mapping[str, Any]
    fields: Mapping[str, Any]

    def devices(self, addresses: list[tuple[str, int | None]], report: Report) -> list[Entry]:
        try:
            entries = [self._device(n, host, port) for n, (host, port) in enumerate(addresses, 1)]
        except ValueError as exc:
            report.note(f"{self.label}.{exc}")
            return []
        counts = Counter(entry.id for entry in entries)
        twice = next((i for i, n in counts.items() if n > 1), None)
        if twice is not None:
            report.note(
                f"{self.label}.id: gives {twice!r} to {counts[twice]} devices; include {{ip}} "
                "(and {port} when the group has several ports) or {index}"
            )
            return []
        return entries

    def _device(self, position: int, host: str, port: int | None) -> Entry:
        model = self.kind.config.model_fields
        by_host = "host" in model
        if not by_host and "url" not in model:
            raise ValueError(f"kind: a {self.kind.name} has no address; list them one by one")
        shared = {**self.defaults, **self.fields}
        usual = shared.get("port", model["port"].default) if by_host else None
        port = port or usual or (None if by_host else self.kind.usual_port)
        values = {"ip": host, "host": host, "index": position, "port": port}
        made = {"kind": self.kind.name, **self._templated(values, by_host)}
        pinned = {"host": host, "port": port} if by_host else {"url": made["url"]}
        if by_host and port != usual:
            made["port"] = port
        entry = Entry({}, self.table, self.label, pinned=pinned, group=self.label)
        entry.set(self.defaults, f"defaults.{self.kind.name}")
        entry.set(self.fields, self.label)
        entry.set(made, self.label)
        return entry

    def _templated(self, values: dict[str, Any], by_host: bool) -> dict[str, Any]:
        """The fields a group writes per device: id, host or url, and a templated name."""
        slugged = {**values, "ip": _slug(values["ip"]), "host": _slug(values["host"])}
        made = {"id": _render("id", self.template, slugged)}
        if isinstance(self.fields.get("name"), str):
            made["name"] = _render("name", self.fields["name"], values)
        if by_host:
            made["host"] = values["host"]
        else:
            bracketed = _url_host(values["host"])
            in_url = {**values, "ip": bracketed, "host": bracketed}
            made["url"] = _render("url", self.fields.get("url", "http://{host}:{port}"), in_url)
        return made


def _slug(text: str) -> str:
    return _NOT_SLUG.sub("-", text.lower())


def _render(name: str, template: Any, values: Mapping[str, Any]) -> str:
    if not isinstance(template, str):
        raise ValueError(f"{name}: must be text")
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(template) if field}
        unknown = sorted(names - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(f"has no placeholder {{{unknown[0]}}}")
        if "port" in names and values.get("port") is None:
            raise ValueError("needs {port}, and this kind has no usual port: give ports")
        return template.format_map(values)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"{name}: {template!r} {exc}; a template knows {{ip}}, {{port}} and {{index}} "
            "(e.g. 'wm-{ip}', 'rig-{index:03}')"
        ) from None


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _address(pinned: Mapping[str, Any]) -> str:
    if "url" in pinned:
        return str(pinned["url"])
    host, port = pinned["host"], pinned["port"]
    return f"{_url_host(host)}:{port}" if port else host


def _without(table: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k not in keys}


def _hosts(raw: Any, where: str, report: Report, required: bool) -> list[str]:
    if raw is None and not required:
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        report.note(f"{where}: {'missing; ' if raw is None else ''}{HOSTS_HELP}")
        return []
    hosts: list[str] = []
    for item in items:
        try:
            hosts.extend(_addresses(item.strip()))
        except ValueError as exc:
            report.note(f"{where}: {exc}")
        if len(hosts) > MAX_GROUP_DEVICES:
            break
    return hosts


def _addresses(item: str) -> list[str]:
    """`10.0.1.0/24`, `10.0.1.10-10.0.1.250`, `10.0.1.10-250`, `10.0.1.7` or `miner7.lan`."""
    if "/" in item:
        return [str(a) for a in _network(item).hosts()]
    start, dash, end = item.partition("-")
    first = _ip(start) if dash else None
    if first is not None:
        last = _range_end(item, first, end.strip())
        count = int(last) - int(first) + 1
        if count > MAX_GROUP_DEVICES:
            raise ValueError(
                f"{item!r} holds {count} addresses; a group holds at most {MAX_GROUP_DEVICES}"
            )
        return [
            str(
                ipaddress.ip_address(int(first) + k)
                if first.version == 4
                else ipaddress.IPv6Address(int(first) + k)
            )
            for k in range(count)
        ]
    address = _ip(item)
    if address is not None:
        return [str(address)]
    if _HOSTNAME.fullmatch(item):
        return [item.lower()]
    raise ValueError(f"{item!r} is not an address, range, network or host name")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise ValueError(f"{item!r} is not a network like 10.0.1.0/24") from None
    if network.network_address != _ip(item.partition("/")[0]):
        raise ValueError(f"{item!r} has host bits set: the network is {network}")
    if network.num_addresses > MAX_GROUP_DEVICES + 2:
        raise ValueError(
            f"{item!r} holds {network.num_addresses} addresses; a group holds at "
            f"most {MAX_GROUP_DEVICES}"
        )
    return network


def _range_end(
    item: str, first: ipaddress.IPv4Address | ipaddress.IPv6Address, end: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    last = _ip(end)
    if last is None and end.isdigit() and first.version == 4 and int(end) <= 255:
        last = ipaddress.IPv4Address(int(first) & ~0xFF | int(end))
    if last is None or last.version != first.version:
        raise ValueError(f"{item!r} is not a range like 10.0.1.10-10.0.1.250 or 10.0.1.10-250")
    if int(last) < int(first):
        raise ValueError(f"{item!r} ends before it starts")
    return last


def _ports(raw: Any, where: str, report: Report) -> list[int | None]:
    if raw is None:
        return [None]
    if isinstance(raw, str) and "-" in raw:
        low, _, high = raw.partition("-")
        if low.strip().isdigit() and high.strip().isdigit():
            raw = list(range(int(low), int(high) + 1))
    items = raw if isinstance(raw, list) else [raw]
    valid = [p for p in items if isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536]
    if not items or len(valid) != len(items):
        report.note(f"{where}: a port (1-65535), a list of ports or a range like '44444-44447'")
        return []
    return list(valid)


# [[devices]] -------------------------------------------------------------------------------


def _device_entries(
    raw: Any, grouped: list[Entry], defaults: Mapping[str, dict[str, Any]], report: Report
) -> list[Entry]:
    """Standalone devices; an entry with a group device's id refines that one instead."""
    if not isinstance(raw, list):
        report.note("devices: must be a list of [[devices]] tables")
        return []
    by_id: dict[str, Entry] = {}
    for entry in grouped:
        by_id.setdefault(entry.id, entry)  # a later group's copy is a duplicate, reported so
    entries = []
    for index, table in enumerate(raw):
        where = f"devices[{index}]"
        if not isinstance(table, dict):
            report.note(f"{where}: must be a [[devices]] table")
            continue
        label = f"{where} ({table['id']})" if table.get("id") else where
        target = by_id.get(str(table.get("id")))
        if target is not None and target.table.startswith("devices"):
            report.note(f"{label}.id: already used by {target.table}")
            continue
        if target is not None:
            _refine(target, table, where, label, report)
            continue
        entry = Entry({}, where, label)
        kind = table.get("kind")
        if isinstance(kind, str) and kind in defaults:
            entry.set(defaults[kind], f"defaults.{kind}")
        entry.set(table, label)
        entries.append(entry)
    return entries


def _refine(
    target: Entry, table: Mapping[str, Any], where: str, label: str, report: Report
) -> None:
    moved = [
        k
        for k in ("kind", *target.pinned)
        if k in table and table[k] != target.values.get(k, target.pinned.get(k))
    ]
    for key in moved:
        report.note(
            f"{label}.{key}: {target.id} is {target.group}'s {target.values['kind']} at "
            f"{_address(target.pinned)}; an entry for a group's device refines it and keeps "
            f"its kind and address (drop {key}, or choose another id)"
        )
    target.table = where  # claimed, even when refused: a second entry is a duplicate
    if not moved:
        target.set(table, label)
        target.label = label


def _apply_device_env(entries: list[Entry], environ: Mapping[str, str], report: Report) -> None:
    """`EDGE_AGENT_DEVICE__<ID>__<FIELD>=value` overrides one field of the device with that id."""
    by_id = {entry.id.lower(): entry for entry in entries}
    for name, value in environ.items():
        if not name.startswith(DEVICE_ENV_PREFIX):
            continue
        device_id, _, key = name[len(DEVICE_ENV_PREFIX) :].lower().partition("__")
        target = by_id.get(device_id) or by_id.get(device_id.replace("_", "-"))
        if target is None or not key:
            report.note(f"{name} names no configured device field")
        else:
            target.set({key: _env_value(value)}, target.label)


def _env_value(text: str) -> Any:
    """`["reboot", "stop"]` in a variable is a list; anything else stays text for pydantic."""
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


# checks ------------------------------------------------------------------------------------


def _duplicate_id(entry: Entry, first: dict[str, Entry], report: Report) -> bool:
    """Whether an earlier entry has this id (entries without one claim none)."""
    if "id" not in entry.values:
        return False
    earlier = first.setdefault(entry.id, entry)
    if earlier is not entry:
        message = f"already used by {earlier.table}"
        report.add(entry.origin("id"), "id", message, entry.id, same=earlier.table)
    return earlier is not entry


def _validated(entry: Entry, report: Report) -> DeviceConfig | None:
    problem = kind_problem(entry.values, report.kinds)
    if problem:
        report.add(entry.origin("kind"), "kind", problem, entry.id)
        return None
    kind = report.kinds[entry.values["kind"]]
    try:
        device = kind.config.model_validate(entry.values)
    except ValidationError as exc:
        for error in exc.errors():
            path, message = error_path_and_message(error)
            report.add(
                entry.origin(path.partition(".")[0].partition("[")[0]), path, message, entry.id
            )
        device = None
    unknown = unknown_commands(kind, entry.values.get("allow_commands"))
    for name in unknown:
        message = f"{name!r} is not a command {kind.catalog.title} has"
        report.add(entry.origin("allow_commands"), "allow_commands", message, entry.id)
    return None if unknown else device


def unknown_commands(kind: DeviceKind, names: Any) -> list[str]:
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and kind.catalog.command(n) is None]


def _overlap(entry: Entry, seen: dict[tuple[str, int], Entry], report: Report) -> bool:
    """Whether an earlier enabled entry has this one's address:port: one device polled (and
    commanded) twice. Read from the entry as written, so that it is found beside field errors."""
    where = _endpoint(entry.values, report.kinds)
    if where is None:
        return False
    other = seen.setdefault(where, entry)
    if other is entry:
        return False
    name = "host" if "host" in entry.values else "url"
    message = f"{_url_host(where[0])}:{where[1]} is also the address of {other.id} ({other.table})"
    report.add(entry.origin(name), "", message, entry.id, same=other.table)
    return True


def _endpoint(values: Mapping[str, Any], kinds: Mapping[str, DeviceKind]) -> tuple[str, int] | None:
    kind = kinds.get(str(values.get("kind")))
    if kind is None or kind.config.shared_address or values.get("enabled") is False:
        return None
    model = kind.config.model_fields
    host: Any
    if "host" in model:
        host, port = values.get("host"), values.get("port", model["port"].default)
    else:
        try:
            parts = urlsplit(str(values.get("url", "")))
            host = parts.hostname
            port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        except ValueError:
            return None
    if not isinstance(host, str) or not host.strip() or not isinstance(port, int):
        return None
    address = _ip(host)
    return (str(address) if address else host.strip().lower(), port)
