"""Simulated devices that speak the real wire protocols on loopback sockets."""
