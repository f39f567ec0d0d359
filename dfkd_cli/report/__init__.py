"""Reporting: gather every run below some directories into one table, per-cell summaries, paired
tests against a baseline and a reference, Markdown / LaTeX text and figures."""
