"""A clone in an empty folder has no shared folder beside it: tests read only the repo."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|parents\[[2-9]\]|\.parent\.parent\.parent|REPO\.parent\b")


def _sources() -> list[Path]:
    files = [*REPO.joinpath("tests").rglob("*.py"), *REPO.joinpath("bench").rglob("*.py")]
    files += [p for p in REPO.joinpath(".ci").iterdir() if p.is_file()]
    return [p for p in files if p != Path(__file__).resolve()]


def test_no_test_bench_or_ci_file_reads_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_the_captured_fixtures_are_in_the_repository() -> None:
    fixtures = REPO / "tests" / "fixtures"
    for folder in ("bitminter", "srs-real", "xmrig"):
        assert any((fixtures / folder).iterdir()), f"tests/fixtures/{folder} is empty"
