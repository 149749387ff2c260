"""What the end-to-end outage tests share: each outside server is down in each way in turn."""

from __future__ import annotations

import pytest

from tests.fakes.outage import Mode

#: no listener; a listener that accepts and never speaks; one that answers after its slow_seconds
OUTAGE_MODES: list[Mode] = ["refused", "hanging", "slow"]


@pytest.fixture(params=OUTAGE_MODES)
def mode(request: pytest.FixtureRequest) -> Mode:
    chosen: Mode = request.param
    return chosen
