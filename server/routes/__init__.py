"""The app's blueprints, one module per group of routes."""
