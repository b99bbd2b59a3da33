"""Reports read only the results store: a terminal leaderboard and a self-contained HTML page."""

from eis.report.html import render_html, write_html, write_report
from eis.report.tables import ReportData, TrackSection, build_report_data
from eis.report.terminal import leaderboard_table, print_report

__all__ = [
    "ReportData",
    "TrackSection",
    "build_report_data",
    "leaderboard_table",
    "print_report",
    "render_html",
    "write_html",
    "write_report",
]
