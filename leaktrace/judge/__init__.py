"""Judging aggregated sites: growth and trend, missed frees, reachability,
the evidence behind a verdict, and diffs between reports.
"""
