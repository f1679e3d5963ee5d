"""Catalogs → the README's per-kind tables (state schema, entities, commands).

`python -m agent.catalog.docs README.md` rewrites the blocks between
`<!-- catalog:KIND -->` and `<!-- /catalog:KIND -->`; a test fails when README is stale.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from agent.catalog.model import Catalog, CommandSpec, Param


class HasCatalog(Protocol):
    @property
    def catalog(self) -> Catalog: ...


_BLOCK = re.compile(r"(<!-- catalog:(\w+) -->\n).*?(<!-- /catalog:\2 -->)", re.S)


def kind_tables(catalog: Catalog) -> str:
    return "\n".join(
        [
            f"#### {catalog.title} state (`{{base}}/{{device}}`)",
            "",
            "| field | type | unit | meaning |",
            "|---|---|---|---|",
            *(
                f"| `{f.path}` | {f.type} | {f.unit or ''} | {_cell(f.description)} |"
                for f in catalog.fields
            ),
            "",
            f"#### {catalog.title} Home Assistant entities",
            "",
            "| key | platform | name | unit | class | category |",
            "|---|---|---|---|---|---|",
            *(
                f"| `{e.key}` | {e.platform} | {e.name or '(device)'} | {e.unit or ''} | "
                f"{e.device_class or ''} | {e.entity_category or ''} |"
                for e in catalog.entities
            ),
            "",
            f"#### {catalog.title} commands (`{{base}}/{{device}}/set/<command>`)",
            "",
            "| command | parameters | plain payload | class | what it does |",
            "|---|---|---|---|---|",
            *(_command_row(c) for c in catalog.commands),
            "",
            *_class_notes(catalog),
            *_publish_defaults(catalog),
        ]
    )


def _publish_defaults(catalog: Catalog) -> list[str]:
    """The kind's publish filters (README: Publish filters), when it declares any."""
    defaults = catalog.publish
    bands: dict[str, list[str]] = {}
    for pattern, value in defaults.deadband.items():
        bands.setdefault(f"deadband {_band(value)}", []).append(pattern)
    rules = {
        "immediate: never held back": list(defaults.immediate),
        **bands,
        "quiet: rides along, never publishes alone": list(defaults.quiet),
    }
    rows = [f"| {rule} | {_patterns(found)} |" for rule, found in rules.items() if found]
    if not rows:
        return []
    interval = "state_refresh" if defaults.max_interval is None else f"{defaults.max_interval:g} s"
    return [
        f"#### {catalog.title} publish filters (defaults; any other change publishes)",
        "",
        "| rule | fields |",
        "|---|---|",
        *rows,
        "",
        f"Maximum interval: {interval}.",
        "",
    ]


def _patterns(patterns: list[str]) -> str:
    return ", ".join(f"`{p}`" for p in patterns)


def _band(value: float | str) -> str:
    return f"{value}" if isinstance(value, str) else f"±{value:g} (absolute)"


def _command_row(spec: CommandSpec) -> str:
    params = "<br>".join(_param(p) for p in spec.params) or "—"
    plain = f"`{spec.plain}`" if spec.plain else ("CLI only" if spec.cli_only else "any (press)")
    return f"| `{spec.name}` | {params} | {plain} | {_class(spec)} | {_cell(spec.description)} |"


def _class(spec: CommandSpec) -> str:
    """`sensitive`, `disruptive` (both need allow_commands), `routine`, or routine-or-sensitive."""
    if spec.sensitive_when is not None and not spec.gated:
        return "routine / **sensitive**¹"
    return f"**{spec.security}**" if spec.gated else "routine"


def _class_notes(catalog: Catalog) -> list[str]:
    notes = [
        f"¹ `{c.name}`: {_cell(c.sensitive_when.summary)}."
        for c in catalog.commands
        if c.sensitive_when is not None and not c.gated
    ]
    return [*notes, ""] if notes else []


def _param(param: Param) -> str:
    parts = [f"`{param.name}` {param.type}"]
    if param.minimum is not None or param.maximum is not None:
        parts.append(f"{_num(param.minimum)}…{_num(param.maximum)}")
    if param.choices:
        parts.append(" / ".join(param.choices))
    if not param.required:
        parts.append("optional")
    return " ".join(parts)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(text: str, kinds: Mapping[str, HasCatalog]) -> str:
    """`text` with each kind's block rewritten from the catalog of that kind in `kinds`."""

    def replace(match: re.Match[str]) -> str:
        kind = match.group(2)
        body = kind_tables(kinds[kind].catalog) if kind in kinds else "(kind not built yet)\n"
        return f"{match.group(1)}{body}{match.group(3)}"

    return _BLOCK.sub(replace, text)


def main(argv: list[str], kinds: Mapping[str, HasCatalog]) -> int:
    path = Path(argv[0] if argv else "README.md")
    text = path.read_text()
    path.write_text(render(text, kinds))
    return 0


if __name__ == "__main__":  # a composition root: the registry is handed in only here
    from agent.kinds import KINDS

    raise SystemExit(main(sys.argv[1:], KINDS))
