"""Turning what the pipeline computed into reports: results table and JSON, figures, Markdown,
HTML. Nothing here runs an analysis or a backtest (moetrace.pipeline does)."""

from moetrace.report.results import SCHEMA_VERSION, Row, summarize
from moetrace.report.write import Report, write_report

__all__ = ["SCHEMA_VERSION", "Report", "Row", "summarize", "write_report"]
