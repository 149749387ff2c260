"""Durable file operations: atomic replace, group commit, moves that never overwrite, crash repair."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ai_employee.vault import fs


def temps(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(fs.TEMP_PREFIX)]


def test_write_durable_creates_a_file(tmp_path: Path) -> None:
    target = tmp_path / "note.md"
    fs.write_durable(target, b"hello")
    assert target.read_bytes() == b"hello"


def test_write_durable_replaces_the_old_content_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "note.md"
    target.write_bytes(b"old content that is longer")
    inode_before = target.stat().st_ino
    fs.write_durable(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode_before  # a new file renamed over the old, not rewritten in place
    assert temps(tmp_path) == []


def test_write_durable_that_cannot_replace_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a folder"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        fs.write_durable(target, b"data")
    assert temps(tmp_path) == []
    assert (target / "inside").read_text() == "kept"


def test_write_durable_batch_writes_every_item_and_leaves_no_temp(tmp_path: Path) -> None:
    items = [(tmp_path / f"n{number}.md", f"content {number}".encode()) for number in range(5)]
    (tmp_path / "n0.md").write_bytes(b"old")
    fs.write_durable_batch(items, barrier=tmp_path)
    for target, data in items:
        assert target.read_bytes() == data
    assert temps(tmp_path) == []


def test_write_durable_batch_of_two_items_writes_both(tmp_path: Path) -> None:
    items = [(tmp_path / "a.md", b"a"), (tmp_path / "b.md", b"b")]
    fs.write_durable_batch(items, barrier=tmp_path)
    assert [target.read_bytes() for target, _ in items] == [b"a", b"b"]
    assert temps(tmp_path) == []


def test_write_durable_batch_that_fails_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "x").write_text("x")
    items = [(tmp_path / "a.md", b"a"), (tmp_path / "b.md", b"b"), (tmp_path / "blocker", b"c")]
    with pytest.raises(OSError):
        fs.write_durable_batch(items, barrier=tmp_path)
    assert temps(tmp_path) == []


def test_move_renames(tmp_path: Path) -> None:
    source, target = tmp_path / "a.md", tmp_path / "sub" / "a.md"
    target.parent.mkdir()
    source.write_text("x")
    fs.move(source, target)
    assert not source.exists()
    assert target.read_text() == "x"


@pytest.mark.parametrize("source_watched", [False, True])
def test_move_refuses_to_overwrite_an_existing_target(tmp_path: Path, source_watched: bool) -> None:
    source, target = tmp_path / "a.md", tmp_path / "b.md"
    source.write_text("source")
    target.write_text("target")
    with pytest.raises(FileExistsError):
        fs.move(source, target, source_watched=source_watched)
    assert source.read_text() == "source"
    assert target.read_text() == "target"


def test_move_refuses_to_overwrite_a_dangling_symlink(tmp_path: Path) -> None:
    source, target = tmp_path / "a.md", tmp_path / "b.md"
    source.write_text("source")
    target.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        fs.move(source, target)
    assert target.is_symlink()
    assert source.read_text() == "source"


def test_move_out_of_a_watched_folder_leaves_one_name(tmp_path: Path) -> None:
    inbox, done = tmp_path / "Inbox", tmp_path / "Done"
    inbox.mkdir()
    done.mkdir()
    source = inbox / "a.md"
    source.write_text("x")
    inode = source.stat().st_ino
    fs.move(source, done / "a.md", source_watched=True)
    assert not source.exists()
    moved = done / "a.md"
    assert moved.stat().st_ino == inode
    assert moved.stat().st_nlink == 1


def test_finish_move_removes_the_leftover_of_a_link_then_unlink_interrupted_after_the_link(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "a.md", tmp_path / "b.md"
    source.write_text("x")
    os.link(source, target)  # the crash came here: same inode under both names
    assert fs.finish_move(source, target) is True
    assert not source.exists()
    assert target.read_text() == "x"
    assert target.stat().st_nlink == 1


def test_finish_move_leaves_a_different_file_with_the_same_name_alone(tmp_path: Path) -> None:
    source, target = tmp_path / "a.md", tmp_path / "b.md"
    source.write_text("a new file that happens to have the old name")
    target.write_text("x")
    assert fs.finish_move(source, target) is False
    assert source.exists()


def test_finish_move_of_a_completed_move_does_nothing(tmp_path: Path) -> None:
    target = tmp_path / "b.md"
    target.write_text("x")
    assert fs.finish_move(tmp_path / "a.md", target) is False
    assert target.exists()


def test_unique_path_numbers_a_taken_name(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text("")
    (tmp_path / "x (2).md").write_text("")
    assert fs.unique_path(tmp_path, "x", ".md") == tmp_path / "x (3).md"
    assert fs.unique_path(tmp_path, "y", ".md", taken={"y.md"}) == tmp_path / "y (2).md"


def test_unique_path_counts_a_dangling_symlink_as_taken(tmp_path: Path) -> None:
    (tmp_path / "x.md").symlink_to(tmp_path / "nowhere")
    assert fs.unique_path(tmp_path, "x", ".md") == tmp_path / "x (2).md"


def test_remove_stale_temps_removes_only_our_own_prefix(tmp_path: Path) -> None:
    ours = tmp_path / f"{fs.TEMP_PREFIX}0a1b2c3d4e5f-note.md"
    others = [".hidden", "draft.tmp", "note.md", ".aie-other", "aie-tmp-looks-similar"]
    ours.write_text("half")
    for name in others:
        (tmp_path / name).write_text("keep")
    assert fs.remove_stale_temps(tmp_path) == 1
    assert not ours.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(others)


def test_ensure_same_filesystem_accepts_folders_on_one_device(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fs.ensure_same_filesystem([tmp_path, tmp_path / "a", tmp_path / "b"])


def test_ensure_same_filesystem_raises_cross_device_error_for_two_devices(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) distinct from the temporary directory")
    with pytest.raises(fs.CrossDeviceError, match="span filesystems"):
        fs.ensure_same_filesystem([tmp_path, other])
