"""Settings come from the environment (prefix ``SIYU_``): one build serves laptop and cluster."""

from __future__ import annotations

from datetime import time
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIYU_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///siyu.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db",
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        description="The brand's timezone: day boundaries (check-in, birthdays) follow it.",
    )
    unknown_buyer: Literal["guest", "enrol"] = Field(
        default="guest",
        description="An order whose buyer matches no member: keep it as a guest order, "
        "or enrol the buyer as a new member.",
    )
    auto_migrate: bool = Field(default=True, description="Upgrade the schema when the app starts.")
    scheduler: bool = Field(
        default=True,
        description="Run the daily jobs inside `siyu serve`; turn off when cron runs "
        "`siyu jobs run-all` instead (running both is safe, only wasteful).",
    )
    jobs_at: time = Field(
        default=time(2, 0), description="Brand-local time after which each day's jobs run."
    )
    analytics_dir: str = Field(
        default="analytics",
        description="Where insight keeps its analytics snapshots (DuckDB/Parquet files).",
    )
    secret_key: str = Field(
        default="change-me-in-production",
        description="Signs console sessions and members' page links; set it in production.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    echo_sql: bool = False


@lru_cache
def get_settings() -> Settings:
    return Settings()
