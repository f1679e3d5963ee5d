"""The wiring rules of README's Layers: imports run one way, topic strings are formed in one
module, and a command that cannot be parsed still answers with its transaction."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from agent.catalog.topics import Topics
from agent.devices.xmrig.catalog import CATALOG as XMRIG
from agent.devices.xmrig.config import XmrigConfig
from agent.runtime.commands import (
    CommandCall,
    CommandService,
    parse_mqtt_command,
    payload_transaction,
)
from agent.runtime.gate import Origin

PACKAGE = Path(__file__).resolve().parents[1] / "agent"
TOPIC_FSTRING = re.compile(r'f"\{[\w.]*(base|prefix|bridge|topics\.\w+|power_set)\}/')


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every `agent…` module imported at run time (typing-only imports left out), including
    function-local ones: hiding a circle in a function still counts."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("agent"):
                assert child.module is not None
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("agent"))
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    paths = {_module(p): p for p in PACKAGE.rglob("*.py")}
    inside = {m for m in paths if m.startswith(packages)}
    return {m: (_imports(paths[m]) & inside) - {m} for m in inside}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := walk(start)):
            return found
    return None


def test_runtime_power_and_catalog_import_without_a_circle() -> None:
    graph = _graph(("agent.runtime", "agent.power", "agent.catalog", "agent.config"))
    assert _cycle(graph) is None


def test_power_control_imports_nothing_of_the_running_agent() -> None:
    controller = _imports(PACKAGE / "power" / "controller.py")
    assert not {m for m in controller if m.startswith("agent.runtime")}


def test_topic_strings_are_formed_only_in_the_topic_builder() -> None:
    builder = PACKAGE / "catalog" / "topics.py"
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path != builder
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TOPIC_FSTRING.search(line)
    ]
    assert offenders == []


def test_the_topic_builder_spells_design_section_2() -> None:
    topics = Topics("edge", "a1")
    assert topics.set("rig1", "pause") == "edge/rig1/set/pause"
    assert topics.power_setting("target") == "edge/bridge/a1/power/set/target"
    assert topics.parse("edge/bridge/a1/request/health") == ("bridge", "a1", "request", "health")
    assert topics.parse("other/rig1") is None


@pytest.mark.parametrize(
    "payload", [b'{"transaction": "t-7"}', b'{"command": 5, "transaction": "t-7"}']
)
def test_an_unparsable_set_payload_answers_with_its_transaction(payload: bytes) -> None:
    device = XmrigConfig(id="rig1", kind="xmrig", url="http://127.0.0.1:1")
    audited: list[dict[str, Any]] = []
    executed: list[str] = []

    async def execute(name: str, params: dict[str, Any]) -> Any:
        executed.append(name)

    call = CommandCall(
        device,
        XMRIG,
        Origin("mqtt", "edge/rig1/set"),
        lambda: parse_mqtt_command(XMRIG, payload, None),
        execute,
        transaction=payload_transaction(payload),
    )
    result = asyncio.run(CommandService(audited.append).run(call))
    assert (result["ok"], result["transaction"], result["error"]["code"]) == (
        False,
        "t-7",
        "validation",
    )
    assert "detail" not in result["error"]
    assert executed == []
    assert [(a["transaction"], a["ok"]) for a in audited] == [("t-7", False)]
