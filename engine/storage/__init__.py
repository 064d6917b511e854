"""Everything that talks to PostgreSQL. Other modules call :meth:`Database.run` with one
of the plain functions from ``connectors``, ``records`` or ``queries``."""

from .database import Database

__all__ = ["Database"]
