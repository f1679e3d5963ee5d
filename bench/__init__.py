"""Fleet-scale benchmark of edge-agent (issue 6): `python -m bench.fleet --help`."""
