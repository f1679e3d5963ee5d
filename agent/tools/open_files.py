"""The process's open-file limit: a scan of thousands of addresses (and a fleet of simulated
miners) holds thousands of sockets at once."""

from __future__ import annotations

import resource


def raise_open_file_limit() -> int:
    """Lift the soft limit to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
