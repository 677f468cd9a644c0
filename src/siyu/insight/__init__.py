"""Insight (洞察): lifecycle, RFM, super users, CLV, segments, KPIs, the health diagnosis and
the what-if simulator. Analytics run on DuckDB reading the live database; see ``engine``."""
