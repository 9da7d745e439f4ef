"""Audit results as one versioned JSON schema, and HTML reports of them.

``load_report(path) -> Report`` reads a report back (JSON only); ``write_html(report, path)``
renders the self-contained HTML report; ``run_audit(model, x, y, ...)`` audits outside pytest.
Heavy imports (keras, matplotlib) happen only inside the functions that need them.
"""
from modtest.report.schema import SCHEMA_VERSION, Report, ReportError, load_report


def write_html(report, path, comparison=None):
    from modtest.report.html import write_html as _w

    return _w(report, path, comparison)


def render_html(report, comparison=None) -> str:
    from modtest.report.html import render_html as _r

    return _r(report, comparison)


def run_audit(*args, **kw):
    from modtest.report.audit import run_audit as _a

    return _a(*args, **kw)


def add_visualization(report, title: str, png_path) -> None:
    """Attach a PNG grid (e.g. from :func:`modtest.report.figures_vis.save_grid`) to the report."""
    import base64
    from pathlib import Path

    report.visualizations.append({"title": str(title),
                                  "png": base64.b64encode(Path(png_path).read_bytes()).decode("ascii")})


__all__ = ["SCHEMA_VERSION", "Report", "ReportError", "load_report", "write_html", "render_html",
           "run_audit", "add_visualization"]
