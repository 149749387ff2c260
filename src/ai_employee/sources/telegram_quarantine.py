"""An update the bot cannot take, however often it tries, is set aside instead of blocking the bot.

The offset only moves once an update became a durable action (decision 0004), so an update whose
handling fails on the vault side (not a lost link: that is retried for as long as it takes) would
come back after every restart, for ever, and hold up every message behind it. Each such failure is
counted in the daemon's key-value store (a restart does not forget it); at the
`telegram.max_update_attempts`-th, the update is written to `Quarantine/` as a note that says why
and holds the update as Telegram sent it (nothing is lost), and the offset moves past it.

The note's name comes from the update (its message's date and the update id), so setting the same
update aside twice (a crash between the note and the offset) writes one note, not two.
"""

from __future__ import annotations

import datetime as dtm
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from telegram import Update

from ai_employee.model.services import KeyValueStore
from ai_employee.sources.telegram_bot import LOGGER_NAME
from ai_employee.sources.telegram_state import NAMESPACE
from ai_employee.vault.fs import write_durable
from ai_employee.vault.layout import Folder
from ai_employee.vault.notes import render_note

log = structlog.get_logger(LOGGER_NAME)

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class SetAside:
    update_id: int
    note: Path
    reason: str


class UpdateQuarantine:
    """Counts the failures of each update and sets an update aside after `max_attempts`."""

    def __init__(
        self,
        store: KeyValueStore,
        bot_id: str,
        vault_root: Path,
        max_attempts: int,
        *,
        now: Callable[[], dtm.datetime] = lambda: dtm.datetime.now(dtm.UTC),
    ) -> None:
        self._store = store
        self._bot_id = bot_id
        self._folder = vault_root / Folder.QUARANTINE.value
        self.max_attempts = max_attempts
        self._now = now

    def _key(self, update_id: int) -> str:
        return f"update_failures:{self._bot_id}:{update_id}"

    def attempts(self, update_id: int) -> tuple[int, str]:
        """How often the update failed so far, and the last error."""
        value = self._store.get(NAMESPACE, self._key(update_id))
        if not value:
            return 0, ""
        data = json.loads(value)
        return int(data.get("attempts", 0)), str(data.get("error", ""))

    def exhausted(self, update_id: int) -> bool:
        return self.attempts(update_id)[0] >= self.max_attempts

    def failed(self, update_id: int, error: str) -> int:
        """Count one more failure (durably); returns the count."""
        attempts = self.attempts(update_id)[0] + 1
        record = {"attempts": attempts, "error": error[:MAX_ERROR_CHARS]}
        self._store.put(NAMESPACE, self._key(update_id), json.dumps(record))
        log.warning(
            "telegram.update_failed",
            update_id=update_id,
            attempt=attempts,
            max_attempts=self.max_attempts,
            error=error[:MAX_ERROR_CHARS],
        )
        return attempts

    def succeeded(self, update_id: int) -> None:
        """Forget the failures of an update that went through at last."""
        if self._store.get(NAMESPACE, self._key(update_id)):
            self._store.put(NAMESPACE, self._key(update_id), "")

    def set_aside(self, update: Update) -> SetAside:
        """Write the update to Quarantine/ with a note saying why (idempotent per update)."""
        attempts, error = self.attempts(update.update_id)
        reason = f"the bot could not take this update after {attempts} tries: {error or 'unknown error'}"
        message = update.effective_message
        sent = message.date if message is not None and message.date else self._now()
        stamp = sent.astimezone(dtm.UTC)
        name = f"{stamp:%Y%m%d-%H%M%S} telegram update {update.update_id} (why).md"
        note = self._folder / name
        if not note.exists():
            self._folder.mkdir(parents=True, exist_ok=True)
            write_durable(note, self._render(update, stamp, attempts, reason).encode("utf-8"))
        log.error("telegram.update_quarantined", update_id=update.update_id, note=name, reason=reason)
        return SetAside(update.update_id, note, reason)

    def _render(self, update: Update, stamp: dtm.datetime, attempts: int, reason: str) -> str:
        message = update.effective_message
        chat = update.effective_chat
        digest = hashlib.sha256(f"{self._bot_id}:{update.update_id}".encode()).hexdigest()[:6]
        properties: dict[str, Any] = {
            "id": f"q-{stamp:%Y%m%d-%H%M%S}-{digest}",
            "type": "quarantine",
            "source": "telegram",
            "update_id": update.update_id,
            "reason": reason,
            "attempts": attempts,
            "quarantined": self._now().isoformat(timespec="seconds"),
        }
        if chat is not None:
            properties["chat_id"] = chat.id
        if message is not None:
            properties["source_ref"] = f"{message.chat_id}:{message.message_id}"
        raw = json.dumps(update.to_dict(), indent=2, ensure_ascii=False, default=str)
        body = (
            f"# Quarantined: Telegram update {update.update_id}\n\n{reason}.\n\n"
            "It was put aside so that the messages after it get through; no action was made from it. "
            "Nothing is deleted: the update as Telegram sent it is below. To try again, send the "
            "message to the bot again.\n\n"
            f"```json\n{raw.replace('```', '` ` `')}\n```\n"
        )
        return render_note(properties, body)
