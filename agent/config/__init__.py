"""Configuration: shared building blocks (base) and the whole settings file (settings)."""
