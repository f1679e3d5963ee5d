"""The top entries of a py-spy collapsed-stack profile (`--format raw`), as Markdown.

    python -m bench.profile_top bench/results/profile-whatsminers-only.txt [--top 25]

Two tables: functions by their own samples (where the interpreter was when sampled) and by
inclusive samples (on the stack at all), each as a share of all samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def frames(stack: str) -> list[str]:
    """`func (path/file.py:12)` frames → `file.py:func`, path trimmed to the package."""
    found = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame.strip())
        if match is None:
            found.append(frame.strip())
            continue
        path = match["file"]
        for marker in ("/agent/", "/bench/", "/site-packages/", "/lib/python3."):
            if marker in path:
                path = path.split(marker, 1)[1]
                if marker == "/lib/python3.":
                    path = path.split("/", 1)[-1]
                elif marker != "/site-packages/":
                    path = marker.strip("/") + "/" + path
                break
        found.append(f"{path}:{match['name']}")
    return found


def tables(text: str, top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        count = int(match["count"])
        stack = frames(match["stack"])
        if not stack:
            continue
        total += count
        own[stack[-1]] += count
        for name in set(stack):
            inclusive[name] += count
    out = [f"{total:,} samples", ""]
    for title, counts in (("own samples", own), ("inclusive samples", inclusive)):
        out += [f"| function ({title}) | share |", "|---|---|"]
        out += [f"| `{name}` | {100 * n / total:.1f} % |" for name, n in counts.most_common(top)]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(tables(args.profile.read_text(), args.top))


if __name__ == "__main__":
    main()
