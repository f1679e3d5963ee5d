"""Memory the agent's imports hold, by package: `python -m bench.import_memory`.

`--dump memory-250.json` instead groups a `bench.fleet --trace-memory` dump's sites by package
(its `by_module` list: the file of each site, the top 30 files).

Imports what `edge-agent run` imports before its first poll (the command line's parser, the
service) under tracemalloc, and charges each module the memory its own import left allocated
(code objects, namespaces, classes), without the modules it imported in turn: -X importtime's
self column, in bytes. Peak RSS is the process's, for the whole import.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import resource
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

_own: dict[str, int] = {}
_stack: list[int] = []  # traced bytes of the nested imports, per import in progress


class _MeasuredLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        before = tracemalloc.get_traced_memory()[0]
        _stack.append(0)
        try:
            self._loader.exec_module(module)
        finally:
            nested = _stack.pop()
            grown = tracemalloc.get_traced_memory()[0] - before
            _own[module.__name__] = grown - nested
            if _stack:
                _stack[-1] += grown

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package …
        return getattr(self._loader, name)


class _MeasuringFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _MeasuredLoader(spec.loader)
        return spec


def package(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "agent" and len(parts) > 2 and parts[1] == "devices":
        return ".".join(parts[:3])
    return ".".join(parts[:2]) if parts[0] == "agent" else parts[0]


def site_package(path: str) -> str:
    """A dump's site file (its last three path parts) → the package it belongs to."""
    if path.startswith("<frozen importlib"):
        return "imports (module code, namespaces: see the import table)"
    parts = path.split("/")
    if parts[0] == "devices":
        return f"agent.devices.{parts[1]}"
    if "agent" in parts[:-1]:
        rest = parts[parts.index("agent") + 1 :]
        return "agent." + (rest[0] if len(rest) > 1 else rest[0].removesuffix(".py"))
    for marker in ("site-packages", "lib"):
        if marker in parts[:-1]:
            parts = parts[parts.index(marker) + 1 :]
    if parts[0].startswith("python3") and len(parts) > 1:
        parts = parts[1:]
    if parts[0] == "site-packages" and len(parts) > 1:
        parts = parts[1:]
    return parts[0].removesuffix(".py")


def group_dump(path: Path) -> None:
    dump = json.loads(path.read_text())
    by_package: dict[str, float] = {}
    for row in dump["by_module"]:
        name = site_package(row["module"])
        by_package[name] = by_package.get(name, 0.0) + row["mb"]
    print(f"{dump['traced_mb']} MB traced\n\n| MB | package |\n|---:|---|")
    for name, mb in sorted(by_package.items(), key=lambda item: -item[1]):
        print(f"| {mb:.2f} | `{name}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump", type=Path, help="group this --trace-memory dump instead")
    args = parser.parse_args()
    if args.dump is not None:
        group_dump(args.dump)
        return
    tracemalloc.start()
    sys.meta_path.insert(0, _MeasuringFinder())
    import agent.cli
    import agent.runtime.service

    agent.cli.build_parser()
    by_package: dict[str, list[int]] = {}
    for name, size in _own.items():
        entry = by_package.setdefault(package(name), [0, 0])
        entry[0] += size
        entry[1] += 1
    total = sum(size for size, _ in by_package.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(_own)} modules imported, {total / 2**20:.2f} MB traced, peak RSS {rss:.1f} MB")
    print("\n| MB | modules | package |\n|---:|---:|---|")
    for name, (size, count) in sorted(by_package.items(), key=lambda item: -item[1][0])[: args.top]:
        print(f"| {size / 2**20:.2f} | {count} | `{name}` |")


if __name__ == "__main__":
    main()
