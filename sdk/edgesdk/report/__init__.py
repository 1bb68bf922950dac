"""The HTML reports of a cost report, a deploy and a comparison (docs/reports.md)."""
