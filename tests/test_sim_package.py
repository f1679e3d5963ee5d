"""The simulators are their own package: the product never imports them (nor their aiohttp),
they never import driver code, and `simulate` / `demo` say what to install when they are
missing."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli
from tests.harness import REPO

SIM_KINDS = ("xmrig", "whatsminer", "srs", "pool")
# What a simulator may take from the product: the Whatsminer AES and key derivation, pinned by
# the vendor's test vectors, and the open-file limit. Everything else it writes from the docs.
ALLOWED_FROM_PRODUCT = {"agent.devices.whatsminer.crypto", "agent.tools.open_files"}


def _imports(path: Path) -> set[str]:
    """The modules a file imports (`from package import module` counts as the module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if _is_module(submodule) else node.module)
    return names


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_no_product_module_imports_the_simulators_or_aiohttp() -> None:
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / "agent").rglob("*.py"))
        for name in _imports(path)
        if _is_under(name, "edge_agent_sim") or _is_under(name, "aiohttp")
    ]
    assert offenders == []


@pytest.mark.parametrize("kind", SIM_KINDS)
def test_a_simulator_takes_nothing_from_the_product_but_the_pinned_crypto(kind: str) -> None:
    path = REPO / "edge_agent_sim" / f"{kind}.py"
    from_product = {name for name in _imports(path) if _is_under(name, "agent")}
    assert from_product <= ALLOWED_FROM_PRODUCT


def test_the_service_runs_without_loading_the_simulators() -> None:
    probe = (
        "import sys; import agent.cli, agent.runtime.agent, agent.devices; "
        "agent.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'amqtt')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["simulate", "--kind", "xmrig"], ["demo", "--help"], ["demo"]])
def test_without_the_sim_extra_simulate_and_demo_name_the_install_and_exit_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "SIM_MODULES", ("edge_agent_sim", "no_such_module_for_this_test"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"edge-agent {argv[0]}: the simulators are not installed" in err
    assert "pip install 'edge-agent[sim]'" in err


def test_with_the_sim_extra_simulate_parses_its_own_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["simulate", "--kind", "no-such-kind"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-kind'" in capsys.readouterr().err
