"""Sluice server: the Quart-Trio app (REST + realtime WebSocket) and the ``sluice`` CLI."""
