"""KPI reports, materialized: the API, the CLI and the diagnosis serve a stored report with
the time it was computed instead of scanning every order on each request.

One row per (kind, period, timezone): ``period`` rows hold a ``kpis.KpiReport`` (the
period, the previous one, the same period last year); ``cohorts`` rows hold the cohort
retention table, keyed by its first join month and the day it was computed. The nightly
``insight.kpis`` job rewrites the standard periods; any other period is stored the first
time someone asks for it. A report is replaced whole, never edited.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from siyu.core.db import Base, BigId, UTCDateTime


class KpiReportRow(Base):
    __tablename__ = "insight_kpi_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # period | cohorts
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    timezone: Mapped[str] = mapped_column(String(64))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seconds: Mapped[float] = mapped_column(Float)  # how long the computation took

    __table_args__ = (UniqueConstraint("kind", "period_start", "period_end", "timezone"),)
