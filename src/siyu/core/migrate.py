"""Schema upgrades through Alembic, callable from the app, the CLI and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from siyu.core.db import Database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def upgrade(db: Database, revision: str = "heads") -> None:
    """To every head: capabilities developed side by side may each add a branch."""
    cfg = alembic_config(db)
    with db.engine.connect() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
        connection.commit()


def revision(db: Database, message: str, rev_id: str | None = None) -> None:
    """Autogenerate a migration from the models (developers:
    ``python -m siyu.core.migrate URL MESSAGE [REV_ID]``), against a database at head."""
    cfg = alembic_config(db)
    with db.engine.connect() as connection:
        cfg.attributes["connection"] = connection
        command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)


if __name__ == "__main__":  # pragma: no cover - developer tool
    import sys

    revision(Database(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
