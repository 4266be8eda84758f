"""Turning backtest results into reports: results table and JSON, figures, Markdown, HTML."""

from moetrace.report.build import DEFAULT_HORIZONS, DEFAULT_PREDICTORS, Report, build_report
from moetrace.report.results import SCHEMA_VERSION, Row, summarize

__all__ = ["DEFAULT_HORIZONS", "DEFAULT_PREDICTORS", "SCHEMA_VERSION", "Report", "Row",
           "build_report", "summarize"]
