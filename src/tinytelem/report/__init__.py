"""Reports of recorded traces: self-contained HTML, CSV tables, JSON and Perfetto trace JSON.

:func:`tinytelem.report.writers.write_report` is what ``tinytelem report`` runs. Every format is
built from the same :class:`~tinytelem.report.data.ReportData`, so they agree. docs/reports.md
describes each output.
"""
