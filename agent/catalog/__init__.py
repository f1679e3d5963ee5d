"""Catalog vocabulary and the one place that turns catalogs into validation, discovery and docs."""
