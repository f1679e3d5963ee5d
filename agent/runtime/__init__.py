"""The running service: MQTT session, device workers, command routing, discovery."""
