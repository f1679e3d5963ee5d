"""Operator tools behind the CLI: LAN scan, config merge, status through the running agent."""
