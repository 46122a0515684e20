"""harness.extauthz.write_admin_token: the admin token that ``make demo`` and the tests write
is never readable by other users, not even for a moment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.extauthz import write_admin_token


def test_a_world_readable_file_in_the_way_never_holds_the_new_token(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("old\n")
    path.chmod(0o644)  # e.g. left by an older demo, or copied by hand
    watcher = tmp_path / "watcher"
    os.link(path, watcher)  # what another user who opened the old file still reads
    write_admin_token(path)
    token = path.read_text().strip()
    assert len(token) == 64 and token != "old"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert watcher.read_text() == "old\n"  # the token went into a new file, created 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin-token", "watcher"]
