"""ASGI entry point: ``hypercorn server.asgi:app --worker-class trio``.

The engine is configured from the environment, exactly as ``sluice serve`` does.
"""

from .app import create_app
from .logs import configure_logging

configure_logging()
app = create_app()
