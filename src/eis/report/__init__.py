"""Reports read only the results store: a terminal leaderboard and a self-contained HTML page."""

from eis.report.casper import CASPER_2023, casper_table
from eis.report.html import render_html, write_html, write_report
from eis.report.tables import ReportData, TrackSection, build_report_data
from eis.report.terminal import leaderboard_table, print_report
from eis.report.transfer import TrackTransfer, tier_transfer, with_tiers

__all__ = [
    "CASPER_2023",
    "ReportData",
    "TrackSection",
    "TrackTransfer",
    "build_report_data",
    "casper_table",
    "leaderboard_table",
    "print_report",
    "render_html",
    "tier_transfer",
    "with_tiers",
    "write_html",
    "write_report",
]
