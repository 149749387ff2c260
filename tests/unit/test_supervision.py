"""Supervision's plain parts: events become checkpoints in the seed design's vocabulary, Slack
messages are rendered safely, and the alert monitor's conditions open and close once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_employee.config import SupervisionSettings, load_settings
from ai_employee.model.events import Event, EventType
from ai_employee.supervision.alerts import AlertMonitor
from ai_employee.supervision.checkpoints import ItemView, checkpoint_for, format_duration, obsidian_uri
from ai_employee.supervision.render import checkpoint_reply, top_message
from ai_employee.supervision.status import LOOKS, Status

ACTION = "act-20261207-101500-2b9f5d"
PLAN = "plan-20261207-101500-2b9f5d"


def event(kind: EventType, **payload: Any) -> Event:
    return Event(kind, payload, correlation_id=ACTION)


class Sink:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, Status]] = []

    def alert(self, title: str, detail: str, status: Status) -> None:
        self.alerts.append((title, detail, status))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_every_status_has_an_emoji_a_colour_and_a_label() -> None:
    assert set(LOOKS) == set(Status)
    assert all(
        look.emoji.startswith(":") and look.colour.startswith("#") and look.label for look in LOOKS.values()
    )
    words = "starting working waiting approved rejected complete failed cancelled warning"
    assert [status.value for status in Status] == words.split()


def test_item_events_become_checkpoints_in_the_vocabulary() -> None:
    cases = {
        EventType.ACTION_CREATED: Status.STARTING,
        EventType.PLAN_CREATED: Status.WAITING,
        EventType.APPROVAL_GRANTED: Status.APPROVED,
        EventType.APPROVAL_DENIED: Status.REJECTED,
        EventType.PLAN_EXECUTING: Status.WORKING,
        EventType.PLAN_EXECUTED: Status.COMPLETE,
        EventType.PLAN_FAILED: Status.FAILED,
        EventType.PLAN_FALLBACK: Status.WARNING,
    }
    for kind, status in cases.items():
        checkpoint = checkpoint_for(event(kind, plan_id=PLAN))
        assert checkpoint is not None and checkpoint.status is status, kind


def test_events_of_no_item_make_no_checkpoint() -> None:
    assert checkpoint_for(Event(EventType.HEALTH_CHECKED, {"service": "email"})) is None
    assert checkpoint_for(event(EventType.SERVICE_RETRYING, service="email")) is None


def test_a_decision_says_who_and_through_which_door() -> None:
    by_slack = checkpoint_for(event(EventType.APPROVAL_GRANTED, plan_id=PLAN, by="jane", door="slack"))
    by_hand = checkpoint_for(event(EventType.APPROVAL_DENIED, plan_id=PLAN, by="vault", door="vault"))
    assert by_slack is not None and by_slack.line == "Approved by jane via Slack"
    assert by_hand is not None and by_hand.line == "Rejected in Obsidian"
    assert by_slack.decided and by_hand.decided


def test_a_plan_waiting_asks_for_a_decision_and_says_what_will_be_sent() -> None:
    checkpoint = checkpoint_for(
        event(
            EventType.PLAN_CREATED,
            plan_id=PLAN,
            action="atlas.work_order",
            params={"title": "Pump 3", "priority": "HIGH"},
        )
    )
    assert checkpoint is not None and checkpoint.asks_decision
    assert "Will send: title=Pump 3, priority=HIGH" in checkpoint.line


def test_user_text_is_escaped_so_it_cannot_ping_or_forge_links() -> None:
    view = ItemView(ACTION, title="<!channel> <https://evil.example|click> & more", note="Plans/x.md")
    rendered = str(top_message(view, "vault").attachments)
    assert "<!channel>" not in rendered
    assert "&lt;!channel&gt;" in rendered
    assert "&amp; more" in rendered


def test_buttons_only_when_a_plan_waits() -> None:
    with_buttons = checkpoint_reply([(Status.WAITING, "Planned")], PLAN)
    without = checkpoint_reply([(Status.WAITING, "Planned")], None)
    assert "aie_approve" in str(with_buttons.attachments) and PLAN in str(with_buttons.attachments)
    assert "aie_approve" not in str(without.attachments)


def test_the_obsidian_link_opens_the_note_by_its_vault_path() -> None:
    assert (
        obsidian_uri("My Vault", "Plans/2026 pump plan.md")
        == "obsidian://open?vault=My%20Vault&file=Plans%2F2026%20pump%20plan"
    )


def test_durations_read_like_a_person_says_them() -> None:
    assert [format_duration(s) for s in (5, 125, 3 * 3600 + 60, 3 * 86400)] == [
        "5 s",
        "2 min 5 s",
        "3 h 1 min",
        "3 days 0 h",
    ]


def test_a_service_is_an_alert_only_after_down_after_and_only_once(tmp_path: Path) -> None:
    clock, sink = Clock(), Sink()
    status: dict[str, Any] = {"services": {"email": {"state": "retrying", "last_error": "refused"}}}
    monitor = AlertMonitor(
        SupervisionSettings(down_after=60),
        status=lambda: status,
        plans_folder=tmp_path,
        sinks=[sink],
        clock=clock,
    )
    monitor.check()
    clock.now += 30
    monitor.check()
    assert sink.alerts == []
    clock.now += 31
    monitor.check()
    monitor.check()
    assert [title for title, _, _ in sink.alerts] == ["email is retrying"]
    status["services"]["email"] = {"state": "running"}
    monitor.check()
    monitor.check()
    assert [title for title, _, _ in sink.alerts] == ["email is retrying", "Recovered: email is retrying"]
    assert sink.alerts[1][2] is Status.COMPLETE


def test_an_execution_past_its_limit_is_an_alert_until_it_ends(tmp_path: Path) -> None:
    clock, sink = Clock(), Sink()
    monitor = AlertMonitor(
        SupervisionSettings(task_limit=600), status=dict, plans_folder=tmp_path, sinks=[sink], clock=clock
    )
    monitor.observe(event(EventType.PLAN_EXECUTING, plan_id=PLAN, action="manus.research"))
    clock.now += 601
    monitor.check()
    assert "executions running longer than 10 min" in sink.alerts[0][0]
    assert "manus.research" in sink.alerts[0][1]
    monitor.observe(event(EventType.PLAN_EXECUTED, plan_id=PLAN))
    monitor.check()
    assert sink.alerts[-1][0].startswith("Recovered:")


def test_a_nearly_full_disk_is_an_alert(tmp_path: Path) -> None:
    sink = Sink()
    monitor = AlertMonitor(
        SupervisionSettings(disk_min_free_percent=100),
        status=dict,
        plans_folder=tmp_path / "Plans",
        sinks=[sink],
    )
    monitor.check()
    assert sink.alerts[0][0] == "the vault's disk is nearly full"


def test_the_slack_and_alert_variables_are_honoured_as_written() -> None:
    settings = load_settings(
        environ={
            "SLACK_APP_TOKEN": "xapp-1-A1-2-abc",
            "SLACK_ALLOWED_USER_IDS": "U0AAA, U0BBB",
            "SLACK_ALERT_CHANNEL": "ops-alerts",
            "TELEGRAM_ADMIN_CHAT_ID": "-1001234",
        }
    )
    assert settings.slack.app_token is not None
    assert settings.slack.app_token.get_secret_value() == "xapp-1-A1-2-abc"
    assert settings.slack.allowed_user_ids == ["U0AAA", "U0BBB"]
    assert settings.slack.alert_channel == "ops-alerts"
    assert settings.telegram.admin_chat_id == -1001234
    assert (settings.slack.min_interval, settings.supervision.stale_after) == (2.0, 86400.0)


def test_done_shows_the_work_order_or_the_research_note() -> None:
    atlas = checkpoint_for(
        event(
            EventType.PLAN_EXECUTED,
            plan_id=PLAN,
            result={"work_order_id": 1042, "url": "https://cmms/wo/1042"},
        )
    )
    manus = checkpoint_for(
        event(
            EventType.PLAN_EXECUTED,
            plan_id=PLAN,
            result={"task_url": "https://manus/t/9", "note": "[[Notes/x]]"},
        )
    )
    assert atlas is not None and "work_order_id: 1042; url: https://cmms/wo/1042" in atlas.line
    assert manus is not None and "task_url: https://manus/t/9; note: [[Notes/x]]" in manus.line
