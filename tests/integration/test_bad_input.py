"""Bad input through the real daemon (`ai-employee start` as a subprocess): unsafe entries go to
Quarantine/ with a note saying why, odd but valid files become actions like any other, bad plans go
to Failed/ without running, and the daemon keeps running throughout."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_employee.vault.notes import render_note
from tests.conftest import DaemonProcess, audit_lines, drop, frontmatter, notes, wait_for

TIMEOUT = 10.0
BLOCKED = 5.0  # known-bug tests: how long the next file may wait before it counts as blocked


@pytest.fixture
def running(daemon: DaemonProcess) -> DaemonProcess:
    return daemon.start()


def assert_alive(daemon: DaemonProcess) -> None:
    assert daemon.process is not None and daemon.process.poll() is None, daemon.output()[-3000:]
    info = daemon.info()
    assert info is not None
    response = httpx.get(f"http://127.0.0.1:{info['port']}/livez", timeout=5.0)
    assert response.status_code == 200


def events(vault: Path, name: str, subject: str | None = None) -> list[dict[str, Any]]:
    return [line for line in audit_lines(vault) if line["event"] == name and subject in (None, line["id"])]


def wait_event(vault: Path, name: str, subject: str | None = None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = wait_for(
        lambda: events(vault, name, subject),
        TIMEOUT,
        message=f"an audit line {name} for {subject or 'anything'}",
    )
    return found


def put(vault: Path, folder: str, name: str, data: bytes | str) -> Path:
    """Arrive in `folder` by rename, as Obsidian and sync tools deliver a finished file."""
    staging = vault / ".staging"
    staging.mkdir(exist_ok=True)
    temp = staging / name
    temp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    target = vault / folder / name
    os.rename(temp, target)
    return target


def vault_files(vault: Path) -> list[Path]:
    """Every regular file in the vault, never following a symlink."""
    found: list[Path] = []
    for directory, _, names in os.walk(vault):
        for name in names:
            path = Path(directory) / name
            if not path.is_symlink() and path.is_file():
                found.append(path)
    return found


def action_for(vault: Path, inbox_name: str) -> list[Path]:
    return [
        path for path in notes(vault / "Needs_Action") if frontmatter(path).get("source_ref") == inbox_name
    ]


def wait_action(vault: Path, inbox_name: str, count: int = 1) -> list[Path]:
    found: list[Path] = wait_for(
        lambda: len(action_for(vault, inbox_name)) == count and action_for(vault, inbox_name),
        TIMEOUT,
        message=f"{count} action note(s) for {inbox_name!r}",
    )
    return found


def attachment_of(vault: Path, action_note: Path) -> Path:
    [link] = frontmatter(action_note)["attachments"]
    assert link.startswith("[[Attachments/") and link.endswith("]]")
    return vault / str(link)[2:-2]


def wait_plan(vault: Path, action_id: str) -> Path:
    def found() -> Path | None:
        for path in notes(vault / "Plans"):
            if frontmatter(path).get("action_id") == action_id:
                return path
        return None

    plan: Path = wait_for(found, TIMEOUT, message=f"the plan of {action_id}")
    return plan


def quarantine_note(vault: Path, original_name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for path in (vault / "Quarantine").glob("* (why).md"):
            if path.name.startswith("."):  # pathlib's * matches our temp files (.aie-tmp-...) too
                continue
            properties = frontmatter(path)
            if properties.get("original_name") == original_name:
                return properties
        return None

    properties: dict[str, Any] = wait_for(found, TIMEOUT, message=f"a quarantine note for {original_name!r}")
    return properties


# --- unsafe input goes to Quarantine/ ----------------------------------------------------------


def test_symlink_to_a_file_outside_the_vault_is_quarantined_and_never_read(
    running: DaemonProcess, vault: Path, tmp_path: Path
) -> None:
    secret = f"TOP-SECRET-{secrets.token_hex(8)}"
    outside = tmp_path / "outside.txt"
    outside.write_text(f"{secret}\n")
    (vault / "Inbox" / "innocent.txt").symlink_to(outside)

    properties = quarantine_note(vault, "innocent.txt")
    assert properties["reason"].startswith("symlink")
    [line] = wait_event(vault, "input.quarantined")
    assert line["reason"].startswith("symlink")
    assert line["file"] == "innocent.txt"
    assert os.listdir(vault / "Inbox") == []
    moved = [path for path in (vault / "Quarantine").iterdir() if path.is_symlink()]
    assert [os.readlink(path) for path in moved] == [str(outside)]  # the link itself, unchanged
    assert notes(vault / "Needs_Action") == []
    for path in vault_files(vault):
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in running.output()
    assert_alive(running)


def test_fifo_is_quarantined_without_blocking_the_daemon(running: DaemonProcess, vault: Path) -> None:
    os.mkfifo(vault / "Inbox" / "pipe")
    properties = quarantine_note(vault, "pipe")
    assert "not a regular file" in properties["reason"]
    [line] = wait_event(vault, "input.quarantined")
    assert "not a regular file" in line["reason"]
    assert os.listdir(vault / "Inbox") == []
    assert notes(vault / "Needs_Action") == []
    drop(vault, "after.txt", "Still working after the pipe")
    wait_action(vault, "after.txt")
    assert_alive(running)


def test_sync_conflict_copy_is_quarantined_with_its_content_kept(running: DaemonProcess, vault: Path) -> None:
    name = "report.sync-conflict-20261121-101500-ABCDEFG.txt"
    drop(vault, name, "the other device's version")
    properties = quarantine_note(vault, name)
    assert properties["reason"].startswith("sync-conflict copy")
    [line] = wait_event(vault, "input.quarantined")
    assert line["reason"].startswith("sync-conflict copy")
    kept = [path for path in (vault / "Quarantine").iterdir() if path.name.endswith(name)]
    assert [path.read_text() for path in kept] == ["the other device's version"]
    assert notes(vault / "Needs_Action") == []
    assert_alive(running)


def test_folder_dropped_into_inbox_becomes_one_action_with_its_content(
    running: DaemonProcess, vault: Path
) -> None:
    staging = vault / ".staging-folder"
    staging.mkdir()
    (staging / "inside.txt").write_text("kept")
    os.rename(staging, vault / "Inbox" / "a folder")
    [action] = wait_action(vault, "a folder")
    assert attachment_of(vault, action).read_text() == "kept"
    assert frontmatter(action)["dropped_folder"] == "a folder"
    assert os.listdir(vault / "Inbox") == []
    assert list((vault / "Quarantine").iterdir()) == []
    assert_alive(running)


def test_conflict_copy_with_a_very_long_name_is_quarantined_and_blocks_nothing(
    running: DaemonProcess, vault: Path
) -> None:
    name = "x" * 200 + ".sync-conflict-20261121-101500-ABCDEFG.txt"
    drop(vault, name, "the other device's version")
    drop(vault, "next.txt", "Dropped after the long name")
    wait_for(lambda: action_for(vault, "next.txt"), BLOCKED, message="the next file's action")
    properties = quarantine_note(vault, name)
    assert properties["reason"].startswith("sync-conflict copy")
    assert_alive(running)


# --- odd but valid files are actions like any other -----------------------------------------------


def test_empty_file_becomes_a_note_saying_so_with_nothing_to_approve(
    running: DaemonProcess, vault: Path
) -> None:
    drop(vault, "empty.txt", b"")
    [action] = wait_action(vault, "empty.txt")
    assert attachment_of(vault, action).stat().st_size == 0
    assert "there is nothing to read" in action.read_text()
    assert frontmatter(action)["status"] == "done"
    assert notes(vault / "Plans") == []  # a local planner's plan is written with the note
    assert_alive(running)


def test_200_mb_file_is_linked_under_attachments_not_copied_into_the_note(
    running: DaemonProcess, vault: Path
) -> None:
    staging = vault / ".staging"
    staging.mkdir()
    big = staging / "machine-log.txt"
    big.write_text("Machine log from line 2\n")
    os.truncate(big, 200 * 1024 * 1024)  # sparse: fast to make, 200 MB to the daemon
    inode = big.stat().st_ino
    os.rename(big, vault / "Inbox" / "machine-log.txt")

    [action] = wait_action(vault, "machine-log.txt")
    attachment = attachment_of(vault, action)
    assert attachment.stat().st_ino == inode
    assert attachment.stat().st_size == 200 * 1024 * 1024
    assert action.stat().st_size < 16 * 1024
    plan = wait_plan(vault, frontmatter(action)["id"])
    assert plan.stat().st_size < 64 * 1024
    assert_alive(running)


def test_binary_file_becomes_an_action_that_links_it(running: DaemonProcess, vault: Path) -> None:
    data = bytes(range(256)) * 64
    drop(vault, "photo.jpg", data)
    [action] = wait_action(vault, "photo.jpg")
    assert attachment_of(vault, action).read_bytes() == data
    assert "Binary file" in action.read_text(encoding="utf-8")
    wait_plan(vault, frontmatter(action)["id"])
    assert_alive(running)


ODD_NAMES = [
    "pump 3 leaking on line 2.txt",
    "naïve résumé 日本語.txt",
    "-rf --help.txt",
    "report..final.txt",
    "x .. y.txt",
]


def test_odd_file_names_become_actions_like_any_other(running: DaemonProcess, vault: Path) -> None:
    for name in ODD_NAMES:
        drop(vault, name, f"Content of {name}\n")
    for name in ODD_NAMES:
        [action] = wait_action(vault, name)
        attachment = attachment_of(vault, action)
        assert attachment.read_text(encoding="utf-8") == f"Content of {name}\n"
        assert attachment.parent.parent == vault / "Attachments"
        assert not attachment.name.startswith(("-", "."))
        assert not action.name.startswith(("-", "."))
        wait_plan(vault, frontmatter(action)["id"])
    assert os.listdir(vault / "Inbox") == []
    assert_alive(running)


def test_file_name_that_is_not_utf8_becomes_an_action_and_blocks_nothing(
    running: DaemonProcess, vault: Path
) -> None:
    raw_name = os.fsdecode(b"scan-\xff\xfe.txt")  # e.g. Latin-1 bytes from an old scanner's SMB share
    drop(vault, raw_name, "scanned page")
    drop(vault, "next.txt", "Dropped after the odd name")
    wait_for(lambda: action_for(vault, "next.txt"), BLOCKED, message="the next file's action")
    wait_for(lambda: len(notes(vault / "Needs_Action")) == 2, TIMEOUT, message="an action for the odd name")
    assert os.listdir(vault / "Inbox") == []
    assert_alive(running)


def test_windows_1252_text_becomes_a_plan_that_can_be_approved_and_run(
    running: DaemonProcess, vault: Path
) -> None:
    """Not UTF-8: read as Latin-1, so the smart quotes arrive as C1 control characters."""
    text = "Please file: the \u201cnew\u201d badge printer ribbons \u2013 blue\n"
    drop(vault, "memo.txt", text.encode("cp1252"))
    [action] = wait_action(vault, "memo.txt")
    plan = wait_plan(vault, frontmatter(action)["id"])
    plan_id = frontmatter(plan)["id"]
    os.rename(plan, vault / "Approved" / plan.name)
    wait_event(vault, "plan.executed", plan_id)
    assert events(vault, "plan.failed") == []
    assert frontmatter(vault / "Done" / plan.name)["status"] == "done"
    assert_alive(running)


def test_file_written_slowly_in_place_becomes_one_action_with_all_its_content(
    running: DaemonProcess, vault: Path
) -> None:
    pieces = [f"line {number}: part of a file an app writes slowly\n" for number in range(6)]
    with (vault / "Inbox" / "slow.txt").open("w", encoding="utf-8") as handle:
        for piece in pieces:
            handle.write(piece)
            handle.flush()
            time.sleep(0.1)  # the scenario: an app pausing between writes (settle time is 0.3 s)
    [action] = wait_action(vault, "slow.txt")
    assert attachment_of(vault, action).read_text(encoding="utf-8") == "".join(pieces)
    assert pieces[-1].strip() in action.read_text(encoding="utf-8")
    assert len(notes(vault / "Needs_Action")) == 1
    assert len(events(vault, "action.created")) == 1


def test_same_name_dropped_twice_makes_two_actions(running: DaemonProcess, vault: Path) -> None:
    drop(vault, "same.txt", "first version")
    wait_action(vault, "same.txt")
    drop(vault, "same.txt", "second version")
    actions = wait_action(vault, "same.txt", count=2)
    assert {attachment_of(vault, path).read_text() for path in actions} == {"first version", "second version"}
    assert len({frontmatter(path)["id"] for path in actions}) == 2
    assert_alive(running)


# --- bad plans go to Failed/ without running ------------------------------------------------------


def assert_nothing_ran(vault: Path) -> None:
    assert [path for path in (vault / "Notes").rglob("*") if path.is_file()] == []
    assert events(vault, "plan.executed") == []
    assert notes(vault / "Done") == []


def failed_note(vault: Path) -> Path:
    found: list[Path] = wait_for(lambda: notes(vault / "Failed"), TIMEOUT, message="a note in Failed/")
    [path] = found
    return path


def test_plan_with_malformed_frontmatter_goes_to_failed(running: DaemonProcess, vault: Path) -> None:
    text = "---\nid: plan-broken\naction: vault.note\nparams: {title: [x\n---\nbody\n"
    put(vault, "Approved", "broken.md", text)
    failed = failed_note(vault)
    assert "not valid YAML" in failed.read_text(encoding="utf-8")
    [line] = wait_event(vault, "plan.failed", "plan-broken")
    assert "not valid YAML" in line["error"]
    assert os.listdir(vault / "Approved") == []
    assert_nothing_ran(vault)
    assert_alive(running)


def test_plan_with_a_yaml_alias_bomb_goes_to_failed(running: DaemonProcess, vault: Path) -> None:
    lines = ["id: plan-bomb", "type: plan", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    put(vault, "Approved", "bomb.md", "---\n" + "\n".join(lines) + "\n---\n")
    failed = failed_note(vault)
    assert "anchors or aliases" in failed.read_text(encoding="utf-8")
    [line] = wait_event(vault, "plan.failed", "plan-bomb")
    assert "anchors or aliases" in line["error"]
    assert_nothing_ran(vault)
    assert_alive(running)


def edited_plan(vault: Path, inbox_name: str, **changes: Any) -> tuple[Path, dict[str, Any], str]:
    """A plan the daemon wrote, edited by the human in Obsidian; returns (its path, properties, body)."""
    drop(vault, inbox_name, "Please file this note about the badge printer ribbons.\n")
    [action] = wait_action(vault, inbox_name)
    plan = wait_plan(vault, frontmatter(action)["id"])
    properties = {**frontmatter(plan), **changes}
    body = plan.read_text(encoding="utf-8").split("\n---\n", 1)[1]
    return plan, properties, body


def approve_edited(vault: Path, plan: Path, properties: dict[str, Any], body: str) -> None:
    put(vault, "Approved", plan.name, render_note(properties, body))
    plan.unlink()


def test_plan_naming_an_unknown_action_goes_to_failed(running: DaemonProcess, vault: Path) -> None:
    plan, properties, body = edited_plan(vault, "unknown.txt", action="rocket.launch")
    approve_edited(vault, plan, properties, body)
    failed = failed_note(vault)
    error = frontmatter(failed)["error"]
    assert "unknown action 'rocket.launch'" in error
    assert frontmatter(failed)["status"] == "failed"
    [line] = wait_event(vault, "plan.failed", properties["id"])
    assert "unknown action" in line["error"]
    assert_nothing_ran(vault)
    assert_alive(running)


def test_plan_with_invalid_params_goes_to_failed(running: DaemonProcess, vault: Path, tmp_path: Path) -> None:
    plan, properties, body = edited_plan(
        vault, "invalid.txt", params={"title": "Escape", "folder": "../outside"}
    )
    approve_edited(vault, plan, properties, body)
    failed = failed_note(vault)
    assert "invalid params for vault.note" in frontmatter(failed)["error"]
    [line] = wait_event(vault, "plan.failed", properties["id"])
    assert "folder" in line["error"]
    assert not (tmp_path / "outside").exists()
    assert_nothing_ran(vault)
    assert_alive(running)


# --- an executed plan never runs twice -------------------------------------------------------------


def test_done_plan_copied_back_into_approved_is_not_executed_again(
    running: DaemonProcess, vault: Path
) -> None:
    drop(vault, "once.txt", "Please file this note about the badge printer ribbons.\n")
    [action] = wait_action(vault, "once.txt")
    plan = wait_plan(vault, frontmatter(action)["id"])
    plan_id = frontmatter(plan)["id"]
    os.rename(plan, vault / "Approved" / plan.name)
    done = wait_for(
        lambda: (vault / "Done" / plan.name).exists() and vault / "Done" / plan.name,
        TIMEOUT,
        message="the plan in Done/",
    )
    wait_event(vault, "plan.executed", plan_id)
    written = [path for path in (vault / "Notes").rglob("*.md")]

    staging = vault / ".staging"
    staging.mkdir(exist_ok=True)
    shutil.copy2(done, staging / plan.name)
    os.rename(staging / plan.name, vault / "Approved" / plan.name)  # a sync tool brings it back

    wait_event(vault, "plan.duplicate_ignored", plan_id)
    wait_for(
        lambda: not (vault / "Approved" / plan.name).exists(), TIMEOUT, message="the copy out of Approved/"
    )
    assert len(events(vault, "plan.executed", plan_id)) == 1
    assert [path for path in (vault / "Notes").rglob("*.md")] == written
    assert_alive(running)
