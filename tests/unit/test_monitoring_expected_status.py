"""A monitor's expected statuses: codes and ranges, nonsense refused (the checks against
real targets: tests/test_monitoring_checks.py)."""

from __future__ import annotations

import pytest

from app.monitoring.checks import parse_expected_status


@pytest.mark.parametrize("bad", [[], ["abc"], [99], ["400-300"], [True], [None]])
def test_expected_status_rejects_nonsense(bad: list[object]) -> None:
    with pytest.raises(ValueError, match=r"status|range"):
        parse_expected_status(bad)  # type: ignore[arg-type]
