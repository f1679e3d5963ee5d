"""Simulated devices that speak the real wire protocols on loopback sockets, written from the
vendors' documents: one module per kind (`edge_agent_sim.<kind>`), `edge-agent simulate`, and
`edge-agent demo` (the agent against a simulated fleet). Installed with `edge-agent[sim]`; the
service itself never imports this package."""
