"""`ai-employee doctor`: what is wrong before the daemon starts, each finding with its fix.

Checks are plain functions (`host`, `settings_check`) and coroutines that make one real, cheap
call to each configured outside service (`services`), run at once with a deadline each. A
finding is ok, warn (works, but not as well as it could) or fail (will not work); the command
exits 1 if anything fails. Nothing a check prints carries a secret.
"""

from ai_employee.doctor.report import Check, Report, Status
from ai_employee.doctor.run import run_doctor

__all__ = ["Check", "Report", "Status", "run_doctor"]
