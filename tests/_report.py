"""Print a summary from a test module whatever pytest's capture setting (the issues ask for counts)."""

from __future__ import annotations

from collections.abc import Sequence


def write_summary(pytestconfig, lines: Sequence[str]) -> None:
    """Write ``lines`` to the terminal, bypassing output capture (nothing without a terminal)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not lines:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
