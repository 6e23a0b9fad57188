"""When a test fails, its report carries the log of every ferrocorn server still running
(a module-scoped fixture's, say): a failure seen once, in CI, can then be read."""

import pytest

from tests.server import live_servers

LOG_TAIL = 20_000  # characters of each log


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        for server in live_servers():
            for name, text in (("log", server.stderr_text()), ("stdout", server.stdout_text())):
                if text:
                    report.sections.append(
                        (f"ferrocorn {name} (pid {server.pid})", text[-LOG_TAIL:])
                    )
