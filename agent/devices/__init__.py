"""Device kinds, one package each (protocol client, catalog, driver, config); what a kind
declares is in agent.devices.kind, and the registry of kinds is agent.kinds."""
