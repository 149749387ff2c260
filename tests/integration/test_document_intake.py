"""Documents on their way in, through the real steps and reading workers on a temporary vault: the
note holds the text, the plan is made from it, a document being read never holds other files, and
message attachments are read the same way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ai_employee.config import load_settings
from ai_employee.executors.vault_note import VaultNoteExecutor
from ai_employee.model.messages import IncomingAttachment, IncomingMessage
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.pipeline.intake import IntakeOutcome
from ai_employee.pipeline.steps import VaultSteps
from ai_employee.planners.template import TemplatePlanner
from ai_employee.vault.audit import AuditLog
from ai_employee.vault.layout import Folder, VaultLayout
from ai_employee.vault.ledger import Ledger
from bench import sample_documents as samples
from tests.conftest import frontmatter, notes, require_ocr


class DocumentVault:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = VaultLayout(root)
        self.layout.create()
        settings = load_settings(environ={"AIE_VAULT": str(root), "AIE_VAULT__SETTLE_SECONDS": "0"})
        self.ledger = Ledger(self.layout.state_dir / "state.db")
        audit = AuditLog(self.ledger, self.layout.folder(Folder.LOGS))
        registry = ExecutorRegistry([VaultNoteExecutor()])
        self.steps = VaultSteps(self.layout, self.ledger, audit, settings, registry, TemplatePlanner())

    def drop(self, name: str, data: bytes | str) -> Path:
        path = self.layout.folder(Folder.INBOX) / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def take(self, *names: str) -> IntakeOutcome:
        return self.steps.intake_files(list(names), renamed=set(names))

    def take_when_read(self, *names: str) -> IntakeOutcome:
        """Intake as the daemon does it: a document comes back once a worker has read it."""
        first = self.take(*names)
        assert self.steps.intake.documents.wait(timeout=30)
        second = self.take(*first.reading)
        second.actions[:0] = first.actions
        return second

    def note_of(self, outcome: IntakeOutcome, inbox_name: str) -> Path:
        [item] = [item for item in outcome.actions if item.row.inbox_name == inbox_name]
        return self.root / item.row.note_rel

    def plan_of(self, outcome: IntakeOutcome, inbox_name: str) -> Path:
        [item] = [item for item in outcome.actions if item.row.inbox_name == inbox_name]
        return self.root / item.row.plan_rel

    def close(self) -> None:
        self.steps.intake.documents.close()
        self.ledger.close()


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DocumentVault]:
    monkeypatch.chdir(tmp_path)
    opened = DocumentVault(tmp_path / "vault")
    yield opened
    opened.close()


def test_a_pdf_in_the_inbox_becomes_an_action_whose_note_and_plan_hold_its_text(vault: DocumentVault) -> None:
    vault.drop("inspection.pdf", samples.text_pdf(["Pump 3 is leaking on line 2", "Seal kit needed"]))
    outcome = vault.take_when_read("inspection.pdf")
    note = vault.note_of(outcome, "inspection.pdf")
    body = note.read_text()
    assert "### Page 1\n\nPump 3 is leaking on line 2" in body and "### Page 2\n\nSeal kit needed" in body
    assert frontmatter(note)["extracted"] == "pdf-text"
    assert "Pump 3 is leaking" in vault.plan_of(outcome, "inspection.pdf").read_text()
    [kept] = list(vault.layout.folder(Folder.ATTACHMENTS).rglob("*inspection.pdf"))
    assert kept.read_bytes().startswith(b"%PDF-")
    assert os.listdir(vault.layout.folder(Folder.INBOX)) == []


def test_a_document_being_read_never_holds_the_files_dropped_with_it(vault: DocumentVault) -> None:
    vault.drop("big.pdf", samples.many_page_pdf(5000))
    vault.drop("note.txt", "The door of room 12 squeaks.\n")
    first = vault.take("big.pdf", "note.txt")
    assert [item.row.inbox_name for item in first.actions] == ["note.txt"]  # planned at once
    assert first.reading == ["big.pdf"]  # in a worker meanwhile
    assert len(notes(vault.layout.folder(Folder.PLANS))) == 1
    assert vault.steps.intake.documents.wait(timeout=30)
    second = vault.take("big.pdf")
    assert "_… cut at 50 pages (of 5,000)._" in vault.note_of(second, "big.pdf").read_text()


def test_a_photo_in_the_inbox_is_embedded_with_its_ocr_text_after_it(vault: DocumentVault) -> None:
    require_ocr()
    vault.drop("alarm.jpg", samples.text_image_bytes(["ALARM PANEL B", "LOW OIL PRESSURE"], "JPEG"))
    outcome = vault.take_when_read("alarm.jpg")
    note = vault.note_of(outcome, "alarm.jpg")
    text = note.read_text()
    [attachment] = frontmatter(note)["attachments"]
    embed = "!" + attachment  # ![[Attachments/<day>/<id>-alarm.jpg]]
    assert embed in text and text.index(embed) < text.index("LOW OIL PRESSURE")
    properties = frontmatter(note)
    assert properties["extracted"] == "ocr" and properties["ocr_confidence"] > 50


def test_a_hostile_document_still_becomes_an_action_with_its_original_kept(vault: DocumentVault) -> None:
    vault.drop("locked.pdf", samples.encrypted_pdf("Top secret"))
    vault.drop("bomb.docx", samples.zip_bomb_docx(40))
    outcome = vault.take_when_read("locked.pdf", "bomb.docx")
    locked = vault.note_of(outcome, "locked.pdf").read_text()
    assert "Could not be read: encrypted PDF" in locked
    assert (
        "Could not be read: the archive would unpack to 40.0 MB"
        in vault.note_of(outcome, "bomb.docx").read_text()
    )
    assert len(notes(vault.layout.folder(Folder.PLANS))) == 2
    assert len(list(vault.layout.folder(Folder.ATTACHMENTS).rglob("*.*"))) == 2


def test_a_document_changed_after_it_was_read_is_read_again(vault: DocumentVault) -> None:
    path = vault.drop("report.pdf", samples.text_pdf(["First draft"]))
    vault.take("report.pdf")
    assert vault.steps.intake.documents.wait(timeout=30)
    path.write_bytes(samples.text_pdf(["Final version of the report"]))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10_000_000))
    outcome = vault.take_when_read("report.pdf")
    text = vault.note_of(outcome, "report.pdf").read_text()
    assert "Final version of the report" in text and "First draft" not in text


def test_office_files_in_the_inbox_give_their_text(vault: DocumentVault) -> None:
    vault.drop("handover.docx", samples.docx_bytes("Night shift", ["Compressor C-2 tripped twice."]))
    vault.drop("parts.xlsx", samples.xlsx_bytes({"Spares": [["Part", "Qty"], ["Filter", 3]]}))
    outcome = vault.take_when_read("handover.docx", "parts.xlsx")
    assert "Compressor C-2 tripped twice." in vault.note_of(outcome, "handover.docx").read_text()
    sheet = vault.note_of(outcome, "parts.xlsx").read_text()
    assert "### Sheet: Spares\n\n| Part | Qty |\n| --- | --- |\n| Filter | 3 |" in sheet
    assert frontmatter(vault.note_of(outcome, "parts.xlsx"))["extracted"] == "xlsx"


def test_a_markdown_file_does_not_repeat_its_heading(vault: DocumentVault) -> None:
    vault.drop("leak.md", "# Leak in hall 3\n\nWater under the north door.\n")
    outcome = vault.take("leak.md")
    body = vault.note_of(outcome, "leak.md").read_text().split("---\n", 2)[2]
    assert body.count("Leak in hall 3") == 1
    assert "Water under the north door." in body


def test_message_attachments_are_read_and_shown_in_the_note(vault: DocumentVault, tmp_path: Path) -> None:
    spooled = tmp_path / "spool-report.pdf"
    spooled.write_bytes(samples.text_pdf(["Chiller 2 vibration above limit"]))
    message = IncomingMessage(
        source="email",
        source_ref="7:42",
        title="Inspection results",
        body="See the attached report and sheet.",
        received=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
        sender="ann@example.com",
        attachments=[
            IncomingAttachment("report.pdf", path=spooled, content_type="application/pdf"),
            IncomingAttachment(
                "readings.xlsx", data=samples.xlsx_bytes({"Week 49": [["Day", "mm/s"], ["Mon", 7.1]]})
            ),
            IncomingAttachment("original.eml", data=b"From: x\r\n\r\nraw", extract=False),
        ],
    )
    futures = vault.steps.intake.read_message_documents(message)
    documents = [None if future is None else future.result(timeout=30) for future in futures]
    assert documents[2] is None
    item, _ = vault.steps.intake_message(message, documents)
    assert item is not None
    note = vault.root / item.row.note_rel
    text = note.read_text()
    assert (
        text.index("See the attached report")
        < text.index("## report.pdf")
        < text.index("Chiller 2 vibration")
    )
    assert "## readings.xlsx" in text and "| Mon | 7.1 |" in text
    assert frontmatter(note)["extracted"] == "pdf-text, xlsx"
    assert "Chiller 2 vibration" in (vault.root / item.row.plan_rel).read_text()
    assert [path for path in vault.steps.ctx.temp_dir.iterdir() if path.is_file()] == []


def test_a_dropped_folder_becomes_one_action_with_all_its_files(vault: DocumentVault) -> None:
    folder = vault.layout.folder(Folder.INBOX) / "Pump 3 visit"
    (folder / "photos" / "day 2").mkdir(parents=True)
    (folder / "notes.txt").write_text("Seal worn; order a new kit.\n")
    (folder / "report.pdf").write_bytes(samples.text_pdf(["Vibration 7.1 mm/s on the drive end"]))
    (folder / "photos" / "day 2" / "sheet.xlsx").write_bytes(
        samples.xlsx_bytes({"Readings": [["mm/s"], [7.1]]})
    )
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    outcome = vault.take_when_read("Pump 3 visit")
    [item] = outcome.actions
    note = vault.root / item.row.note_rel
    text = note.read_text()
    assert "Seal worn; order a new kit." in text
    assert "Vibration 7.1 mm/s on the drive end" in text
    assert "### Sheet: Readings" in text
    properties = frontmatter(note)
    assert properties["dropped_folder"] == "Pump 3 visit" and properties["files"] == 3
    assert sorted(link.split("visit/", 1)[1] for link in properties["attachments"]) == [
        "notes.txt]]",
        "photos/day 2/sheet.xlsx]]",
        "report.pdf]]",
    ]
    for link in properties["attachments"]:
        assert (vault.root / link[2:-2]).is_file()  # every link opens
    assert os.listdir(vault.layout.folder(Folder.INBOX)) == []
    assert "Vibration 7.1" in (vault.root / item.row.plan_rel).read_text()
    assert notes(vault.layout.folder(Folder.QUARANTINE)) == []


def test_a_folder_is_taken_only_once_nothing_in_it_is_still_downloading(vault: DocumentVault) -> None:
    folder = vault.layout.folder(Folder.INBOX) / "batch"
    folder.mkdir()
    (folder / "scan-1.txt").write_text("Page one\n")
    (folder / "scan-2.txt.part").write_text("Page t")
    assert vault.take("batch").actions == []
    (folder / "scan-2.txt.part").rename(folder / "scan-2.txt")
    [item] = vault.take("batch").actions
    assert item.row.extra["files"] == 2


def test_an_empty_file_gets_a_note_saying_so_and_nothing_to_approve(vault: DocumentVault) -> None:
    vault.drop("blank.pdf", b"")
    [item] = vault.take("blank.pdf").actions
    note = vault.root / item.row.note_rel
    assert "there is nothing to read" in note.read_text()
    assert frontmatter(note)["status"] == "done"
    assert notes(vault.layout.folder(Folder.PLANS)) == []
    assert vault.ledger.unfinished_actions() == []


class Crash(BaseException):
    """Stands for the process dying at this point."""


class CrashAfterClaim(Ledger):
    def insert_actions(self, rows, audit=()):  # type: ignore[no-untyped-def]
        super().insert_actions(rows, audit)
        raise Crash


def test_a_folder_intake_cut_by_a_crash_after_its_claim_is_finished_at_restart(
    vault: DocumentVault, tmp_path: Path
) -> None:
    folder = vault.layout.folder(Folder.INBOX) / "scans"
    folder.mkdir()
    (folder / "a.txt").write_text("Gate 4 sensor broken\n")
    crashing = DocumentVault.__new__(DocumentVault)
    crashing.__dict__.update(vault.__dict__)
    crashing.ledger = CrashAfterClaim(vault.layout.state_dir / "state.db")
    audit = AuditLog(crashing.ledger, vault.layout.folder(Folder.LOGS))
    crashing.steps = VaultSteps(
        vault.layout,
        crashing.ledger,
        audit,
        vault.steps.ctx.settings,
        ExecutorRegistry([VaultNoteExecutor()]),
        TemplatePlanner(),
    )
    with pytest.raises(Crash):
        crashing.take("scans")
    crashing.ledger.close()
    assert folder.is_dir()  # claimed, not moved yet
    vault.steps.recover()
    [note] = notes(vault.layout.folder(Folder.NEEDS_ACTION))
    assert "Gate 4 sensor broken" in note.read_text()
    assert len(notes(vault.layout.folder(Folder.PLANS))) == 1
    assert os.listdir(vault.layout.folder(Folder.INBOX)) == []
    assert vault.ledger.unfinished_actions() == []


def test_a_plan_whose_attachment_changed_after_intake_is_made_again_before_it_can_run(
    vault: DocumentVault,
) -> None:
    vault.drop("order.txt", "Replace the filter in AHU-1.\n")
    [item] = vault.take("order.txt").actions
    kept = vault.root / item.row.attachments[0]
    with kept.open("a") as writer:  # a writer nobody saw goes on after the intake
        writer.write("Also replace the belt on AHU-2.\n")
    os.utime(kept, ns=(kept.stat().st_atime_ns, kept.stat().st_mtime_ns + 1_000_000_000))
    plan = vault.root / item.row.plan_rel
    approved = vault.layout.folder(Folder.APPROVED) / plan.name
    os.rename(plan, approved)
    decided = vault.steps.examine_approved([plan.name])
    assert decided.jobs == [] and decided.reread == [item.row.action_id]
    assert not approved.exists()  # never run from the half-read text
    again = vault.steps.reread(item.row.action_id)
    assert again is not None and again.planned is not None
    note = (vault.root / item.row.note_rel).read_text()
    assert "The attachment changed after it was first read" in note and "belt on AHU-2" in note
    assert "belt on AHU-2" in plan.read_text()
    os.rename(plan, approved)
    assert [job.plan_id for job in vault.steps.examine_approved([plan.name]).jobs] == [item.row.plan_id]
