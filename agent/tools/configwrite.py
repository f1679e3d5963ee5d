"""`edge-agent scan --write CONFIG`: add found devices to a config file, keeping the rest.

tomlkit keeps the file's comments, order and formatting; a device already there (same address,
however it got into the file) is never added twice, and ids never collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.config.base import SLUG
from agent.config.settings import ConfigError, load_config
from agent.devices.whatsminer.client import DEFAULT_PORT as WHATSMINER_PORT
from agent.kinds import KINDS
from agent.tools.scan import Found

if TYPE_CHECKING:
    # tomlkit is imported by `scan --write` itself: the parser that names it is built for
    # every command, `run` included.
    import tomlkit
    from tomlkit.items import AoT, Table

DEFAULT_ID_TEMPLATES = {
    "whatsminer": "wm-{ip}",
    "xmrig": "xmrig-{ip}-{port}",
    "srs": "srs-{ip}-{port}",
    "pool": "pool-{ip}-{port}",
}
TEMPLATE_FIELDS = "{ip} (dashes for dots), {last} (last part of the address), {port}, {kind}"
WHATSMINER_HINT = (
    "Whatsminer writes need the admin password: password_file, or [defaults.whatsminer]"
)
SECRET_HINTS = {
    "xmrig": "the API needs its access token: token_file, or [defaults.xmrig] token_file",
    "srs": "the API needs HTTP auth: set username and password_file",
}
NEW_FILE_HEADER = (
    "edge-agent config, started by `edge-agent scan --write`.",
    "Every field is described in config.example.toml.",
    "Check it with: edge-agent check-config -c FILE",
)
Address = tuple[str, int]


class WriteError(ValueError):
    pass


@dataclass(slots=True)
class MergeReport:
    added: list[str] = field(default_factory=list)  # new device ids
    already: list[tuple[str, str]] = field(default_factory=list)  # (address, id in the file)


def parse_templates(values: Iterable[str]) -> dict[str, str]:
    """`--id-template TEMPLATE` (every kind) or `KIND=TEMPLATE`, later ones win."""
    templates = dict(DEFAULT_ID_TEMPLATES)
    for value in values:
        kind, sep, template = value.partition("=")
        if sep and kind in templates:
            templates[kind] = template
        elif sep and "{" not in kind:
            raise WriteError(
                f"--id-template {value!r}: unknown kind {kind!r} (known: {', '.join(templates)})"
            )
        else:
            templates = dict.fromkeys(templates, value)
    for template in templates.values():
        try:
            render_id(template, Found("xmrig", "10.0.0.1", 4028, None, None, "none"))
        except WriteError as exc:
            raise WriteError(f"--id-template {template!r}: {exc}") from None
    return templates


def render_id(template: str, found: Found) -> str:
    ip = re.sub(r"[^0-9a-z]+", "-", found.host.lower()).strip("-")
    last = re.split(r"[.:]", found.host)[-1].lower()
    try:
        text = template.format(ip=ip, last=last, port=found.port, kind=found.kind)
    except (KeyError, IndexError, ValueError) as exc:
        raise WriteError(f"usable fields are {TEMPLATE_FIELDS} ({exc})") from None
    device_id = text.lower()
    if not re.fullmatch(SLUG, device_id) or len(device_id) > 64 or device_id == "bridge":
        raise WriteError(f"gives {device_id!r}, not an id ([a-z0-9_-], at most 64)")
    return device_id


def merge_into(path: Path, found: Iterable[Found], templates: dict[str, str]) -> MergeReport:
    import tomlkit

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = tomlkit.parse(text) if text else _new_document()
    devices = _devices_array(doc)
    known = _known_addresses(devices, path if text else None)
    ids = {str(d.get("id")) for d in devices} | set(known.values())
    report = MergeReport()
    new: list[tuple[Found, str]] = []
    for device in found:
        key = (device.host.lower(), device.port)
        if key in known:
            report.already.append((device.address, known[key]))
            continue
        device_id = _unique(render_id(templates[device.kind], device), ids)
        ids.add(device_id)
        known[key] = device_id
        new.append((device, device_id))
    notes = _notes([device for device, _id in new])
    for device, device_id in new:
        devices.append(_entry(device, device_id, notes))
        notes = []  # one note above what this run added, not one per device
        report.added.append(device_id)
    if report.added:
        _write_atomically(path, tomlkit.dumps(doc))
    return report


def _notes(added: list[Found]) -> list[str]:
    notes = [f"added by edge-agent scan on {time.strftime('%Y-%m-%d')}: {len(added)} devices"]
    if any(f.kind == "whatsminer" for f in added):
        notes.append(WHATSMINER_HINT)
    return notes


def _new_document() -> tomlkit.TOMLDocument:
    import tomlkit

    doc = tomlkit.document()
    for line in NEW_FILE_HEADER:
        doc.add(tomlkit.comment(line))
    return doc


def _devices_array(doc: tomlkit.TOMLDocument) -> AoT:
    import tomlkit
    from tomlkit.items import AoT

    devices = doc.get("devices")
    if devices is None:
        devices = tomlkit.aot()
        if doc.body:
            doc.add(tomlkit.nl())
        doc.append("devices", devices)
    if not isinstance(devices, AoT):
        raise WriteError("the config's `devices` is not a list of [[devices]] tables")
    return devices


def _known_addresses(devices: AoT, path: Path | None) -> dict[Address, str]:
    """Addresses of the file's devices as written, and as the loader expands them (groups)."""
    known: dict[Address, str] = {}
    entries: list[dict[str, Any]] = [dict(d) for d in devices]
    if path is not None:
        with contextlib.suppress(ConfigError, OSError):
            entries += [d.model_dump() for d in load_config(path, kinds=KINDS).settings.devices]
    for entry in entries:
        address = device_address(entry)
        if address is not None:
            known.setdefault(address, str(entry.get("id")))
    return known


def device_address(entry: dict[str, Any]) -> Address | None:
    if entry.get("kind") == "whatsminer" and entry.get("host"):
        return (str(entry["host"]).lower(), int(entry.get("port") or WHATSMINER_PORT))
    url = entry.get("url")
    if not url:
        return None
    parts = urlsplit(str(url))
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname.lower(), port)


def _unique(device_id: str, taken: set[str]) -> str:
    candidate, n = device_id, 2
    while candidate in taken:
        candidate = f"{device_id}-{n}"
        n += 1
    return candidate


def _entry(found: Found, device_id: str, notes: list[str]) -> Table:
    import tomlkit

    table = tomlkit.table()
    for note in notes:
        table.add(tomlkit.comment(note))
    table.add("id", device_id)
    table.add("kind", found.kind)
    if found.kind == "whatsminer":
        table.add("host", found.host)
        if found.port != WHATSMINER_PORT:
            table.add("port", found.port)
    else:
        table.add("url", found.url)
    described = " ".join(p for p in (found.model, found.version) if p)
    if described:
        table["id"].comment(described)
    hint = SECRET_HINTS.get(found.kind)
    if hint and found.auth not in ("none", "none (restricted: read-only)"):
        table.add(tomlkit.comment(hint))
    return table


def _write_atomically(path: Path, text: str) -> None:
    """A new file is private (it will hold or point at secrets); an old one keeps its mode."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        Path(temporary).chmod(mode)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
