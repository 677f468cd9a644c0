"""Alembic migrations; the app and ``siyu db upgrade`` apply them (see ``migrate.py``)."""
