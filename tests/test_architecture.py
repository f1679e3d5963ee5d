"""The shape of the code, kept true by tests: imports run one way, and a device kind is one
folder plus one line in one registry.

The second half defines a throwaway fifth kind (a dimmer on a line-JSON TCP protocol),
registers it in one place (the `kinds` handed to the config loader, the docs and the demo's
fleet) and shows that it gets config loading, discovery payloads, command validation, power
membership, the README table and simulation, with no edit anywhere else.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import pytest

from agent.catalog.discovery import DiscoveryContext, device_block, entity_payload
from agent.catalog.docs import render
from agent.catalog.model import Catalog, CommandSpec, EntityDescription, Param, StateField
from agent.catalog.validate import resolve_command, validate_params
from agent.config.base import DeviceConfig
from agent.config.settings import ConfigError, load_config
from agent.devices.base import Driver, PollResult
from agent.devices.kind import DeviceKind, PowerCapability, registry
from agent.errors import ValidationError
from agent.kinds import KINDS
from edge_agent_sim.demo import start_fleets
from edge_agent_sim.fleet import LoopThread
from tests import toy_simulator
from tests.harness import REPO, Mosquitto, Probe, make_settings, running_agent

PACKAGE = REPO / "agent"


# --- imports run one way ------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _runs_only_elsewhere(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (never at run time) and `if __name__ == "__main__":` (only when
    the module is the program: a composition root, e.g. `python -m agent.catalog.docs`)."""
    if not isinstance(node, ast.If):
        return False
    test = ast.unparse(node.test)
    return "TYPE_CHECKING" in test or "__name__" in test


def _imported_names(module: str, path: Path) -> set[str]:
    """Every module named by an import, at module level or inside a function."""
    names: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _runs_only_elsewhere(child):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package[: len(package) - (child.level - 1)]
                    base = ".".join([*parent, base] if base else parent)
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    names.add(submodule if submodule in MODULES else base)
            walk(child)

    walk(ast.parse(path.read_text()))
    return names


def _dependencies(module: str) -> set[str]:
    """The agent modules that importing `module` runs (a submodule runs its packages too,
    except the ones `module` is itself inside: those are loading already)."""
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    found: set[str] = set()
    for name in _imported_names(module, MODULES[module]):
        parts = name.split(".")
        chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        chain = [m for m in chain if m in MODULES]
        found.update(m for m in chain if m != module and (m not in own or m == chain[-1]))
    return found


GRAPH = {module: _dependencies(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_walk_sees_function_local_imports_and_cycles() -> None:
    """The checks below could fail: the walk finds an import inside a function, and a
    circle drawn by hand is found."""
    assert "agent.runtime.service" in GRAPH["agent.cli"]  # imported inside run_agent
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_agent() -> None:
    assert _cycles(GRAPH) == []


KIND_MODULES = {"agent.kinds", *(f"agent.devices.{name}" for name in KINDS)}
GROUND_FLOOR = [
    m
    for m in MODULES
    if m.startswith(("agent.config", "agent.catalog")) or m in ("agent.errors", "agent.logs")
]


@pytest.mark.parametrize("module", sorted(GROUND_FLOOR))
def test_config_catalog_errors_and_logs_never_load_a_kind(module: str) -> None:
    loaded = {m for m in _reachable(module) if m.startswith(tuple(KIND_MODULES))}
    assert not loaded, f"{module} loads {sorted(loaded)}"


def test_kind_knowledge_stays_in_the_kinds() -> None:
    """Power control and the power port speak intents; the kinds' commands come from them."""
    for path in [*(PACKAGE / "power").glob("*.py"), PACKAGE / "runtime" / "power_port.py"]:
        text = path.read_text()
        for name, kind in KINDS.items():
            assert f'"{name}"' not in text, f"{path.name} names the kind {name}"
            if kind.power is not None:
                spoken = [kind.power.sleep, kind.power.wake, kind.power.preheat]
                for command in filter(None, spoken):
                    assert f'"{command}"' not in text, f"{path.name} speaks {command}"


# --- a fifth kind: one folder (here: this module) plus one registry line -------------------


class DimmerConfig(DeviceConfig):
    kind: Literal["dimmer"]
    host: str
    port: int
    nominal_w: float | None = None


class DimmerDriver(Driver[DimmerConfig]):
    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            reply: dict[str, Any] = json.loads(await reader.readline())
            return reply
        finally:
            writer.close()
            await writer.wait_closed()

    async def poll(self) -> PollResult:
        status = await self._ask({"get": "status"})
        state = {
            "level": status["level"],
            "power_w": status["watts"],
            "mining": status["level"] > 0,
        }
        return PollResult(state=state)

    async def execute(self, command: str, params: dict[str, Any]) -> Any:
        level = {"off": 0, "on": 100}.get(command, params.get("level"))
        return await self._ask({"set": level})


DIMMER_CATALOG = Catalog(
    kind="dimmer",
    title="Dimmer",
    manufacturer="Example",
    default_model="Dimmer",
    fields=(
        StateField("level", "integer", "brightness", "%"),
        StateField("power_w", "number", "draw", "W"),
    ),
    entities=(
        EntityDescription("power", "sensor", "Power", value="power_w", unit="W"),
        EntityDescription(
            "level", "number", "Level", value="level", command="set_level", minimum=0, maximum=100
        ),
    ),
    commands=(
        CommandSpec(
            "set_level",
            "set the brightness",
            params=(Param("level", "int", "percent", minimum=0, maximum=100),),
        ),
        CommandSpec("off", "switch off"),
        CommandSpec("on", "switch on"),
    ),
)

DIMMER = DeviceKind(
    name="dimmer",
    config=DimmerConfig,
    catalog=DIMMER_CATALOG,
    driver=DimmerDriver,
    power=PowerCapability(
        sleep="off", wake="on", percent=lambda percent, _ramp: ("set_level", {"level": percent})
    ),
    simulator="tests.toy_simulator",
    demo_count=2,
)

WITH_DIMMER = registry(*KINDS.values(), DIMMER)  # the one registration


def test_the_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry(DIMMER, DIMMER)


def _write_config(tmp_path: Path, devices: list[dict[str, Any]]) -> Path:
    lines = ['[power]\nenabled = true\nmembers = ["dimmer-*"]\n']
    for device in devices:
        lines.append("[[devices]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in device.items())
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def test_config_loading_knows_the_kind_only_when_handed_it(tmp_path: Path) -> None:
    path = _write_config(tmp_path, [{"id": "dimmer-1", "kind": "dimmer", "host": "h", "port": 1}])
    loaded = load_config(path, environ={}, kinds=WITH_DIMMER)
    (device,) = loaded.settings.devices
    assert isinstance(device, DimmerConfig)
    assert loaded.settings.power.members == ["dimmer-1"]  # a power member through its pattern
    with pytest.raises(ConfigError, match="'dimmer' is not one of"):
        load_config(path, environ={}, kinds=KINDS)


def test_a_percent_less_kind_would_need_nominal_w(tmp_path: Path) -> None:
    switch_only = DeviceKind(
        name="dimmer",
        config=DimmerConfig,
        catalog=DIMMER_CATALOG,
        driver=DimmerDriver,
        power=PowerCapability(sleep="off", wake="on"),
    )
    path = _write_config(tmp_path, [{"id": "dimmer-1", "kind": "dimmer", "host": "h", "port": 1}])
    with pytest.raises(ConfigError, match="dimmer 'dimmer-1' needs nominal_w"):
        load_config(path, environ={}, kinds=registry(*KINDS.values(), switch_only))


def test_discovery_commands_and_docs_come_from_the_catalog() -> None:
    ctx = DiscoveryContext("homeassistant", "edge-agent", "site")
    block = device_block(ctx, DIMMER.catalog, "dimmer-1", "Dimmer 1", None, None)
    payloads = {
        e.key: entity_payload(ctx, DIMMER.catalog, "dimmer-1", e, block)
        for e in DIMMER.catalog.entities
    }
    assert payloads["power"]["state_topic"] == "edge-agent/dimmer-1"
    assert payloads["power"]["unit_of_measurement"] == "W"
    assert payloads["level"]["command_topic"].startswith("edge-agent/dimmer-1/")

    spec = resolve_command(DIMMER.catalog, "set_level", [])
    assert validate_params(spec, {"level": "30"}) == {"level": 30}
    with pytest.raises(ValidationError):
        validate_params(spec, {"level": 150})

    table = render("<!-- catalog:dimmer -->\n<!-- /catalog:dimmer -->\n", WITH_DIMMER)
    assert "`power_w`" in table and "`set_level`" in table


def test_the_kind_is_simulated_polled_commanded_and_power_controlled(tmp_path: Path) -> None:
    async def scenario() -> None:
        fleets, devices = await start_fleets(argparse.Namespace(dimmer=2), WITH_DIMMER)
        try:
            loaded = load_config(_write_config(tmp_path, devices), environ={}, kinds=WITH_DIMMER)
            assert loaded.settings.power.members == ["dimmer-1", "dimmer-2"]
            config = loaded.settings.devices[1]
            driver = DIMMER.driver(config)
            power = DIMMER.power
            assert power is not None
            command, params = power.command("percent", 30, "fast")
            spec = resolve_command(DIMMER.catalog, command, config.allow_commands)
            await driver.execute(spec.name, validate_params(spec, params))
            state = (await driver.poll()).state
            assert (state["level"], power.watts(state), power.mining(state)) == (30, 75.0, True)
            assert fleets[0].devices[1].model.level == 30
            assert fleets[0].devices[0].model.level == 40  # the other dimmer is untouched
            await driver.execute(*power.command("sleep"))
            assert power.mining((await driver.poll()).state) is False
        finally:
            for fleet in fleets:
                await fleet.close()

    asyncio.run(scenario())


def test_the_running_service_serves_the_kind_over_mqtt(
    broker: Mosquitto, probe: Probe, sim_loop: LoopThread
) -> None:
    """The registration reaches the running service too: a state, discovery and a command's
    one result over the real broker, with no line of the agent naming the kind."""
    fleet = sim_loop.run(toy_simulator.start_fleet(1))
    try:
        device = toy_simulator.demo_config(fleet.devices[0], 0)
        settings = make_settings(broker.url, [device], kinds=WITH_DIMMER)
        base, prefix = settings.mqtt.base_topic, settings.homeassistant.discovery_prefix
        probe.subscribe(f"{base}/#", f"{prefix}/#")
        with running_agent(settings, kinds=WITH_DIMMER):
            probe.wait_for(f"{base}/dimmer-1", lambda m: json.loads(m.text)["level"] == 40)
            probe.wait_for(f"{prefix}/number/#", lambda m: "dimmer-1/set/set_level" in m.text)
            probe.publish(f"{base}/dimmer-1/set/set_level", '{"level": 30}')
            result = json.loads(probe.wait_for(f"{base}/dimmer-1/result").text)
            assert (result["ok"], result["command"]) == (True, "set_level")
            assert fleet.devices[0].model.level == 30
            probe.wait_for(f"{base}/dimmer-1", lambda m: json.loads(m.text)["level"] == 30)
    finally:
        sim_loop.run(fleet.close())
