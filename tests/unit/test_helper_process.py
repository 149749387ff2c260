"""A helper process that cannot start fails its first request with a clear error."""

from __future__ import annotations

import pytest

from ai_employee.helper_process import HelperProcess, HelperProcessError


def test_a_helper_whose_module_cannot_be_imported_fails_its_first_request() -> None:
    helper = HelperProcess("ai_employee.no_such_helper", "test helper")
    try:
        with pytest.raises(HelperProcessError, match="test helper exited before it answered"):
            helper.send(("ping",))
            helper.receive()
    finally:
        helper.close()
