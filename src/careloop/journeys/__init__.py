"""Journeys: typed node graphs that act on patients over time — definitions, the durable engine, triggers,
the worker and simulation (docs/journeys.md)."""
