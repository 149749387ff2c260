"""A stand-in for what a user might pick instead: the usual hobby loop that polls a folder.

    python -m bench --peer 'python -m bench.peer_example {vault} --interval 1' \\
        --peer-output '{vault}/Plans/*.md'

Every `interval` seconds it lists Inbox/, and for each file writes a plan note to Plans/ and
moves the file to Attachments/ (one fsync per note, one file at a time, as such scripts do).
It is here to show the `--peer` mode and to calibrate it, not as a fair rival.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path


def handle(vault: Path, name: str) -> None:
    source = vault / "Inbox" / name
    text = source.read_text(encoding="utf-8", errors="replace")
    title = text.strip().splitlines()[0] if text.strip() else name
    temp = vault / "Plans" / f".{name}.tmp"
    with temp.open("w", encoding="utf-8") as handle:
        handle.write(f"---\ntype: plan\nsource: {name}\n---\n# Plan for {title}\n\nFile it as a note.\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temp, vault / "Plans" / f"{Path(name).stem}.md")
    os.rename(source, vault / "Attachments" / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vault", type=Path)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between two looks at Inbox/")
    args = parser.parse_args()
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for folder in ("Inbox", "Plans", "Attachments"):
        (args.vault / folder).mkdir(parents=True, exist_ok=True)
    while running:
        for entry in sorted(os.scandir(args.vault / "Inbox"), key=lambda entry: entry.name):
            if entry.is_file() and not entry.name.startswith("."):
                handle(args.vault, entry.name)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
