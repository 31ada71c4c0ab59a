"""Atomic writes and locks shared by the run folder and the feature store."""

from __future__ import annotations

import json
import threading

import pytest

from budget import files
from budget.errors import BudgetError


def test_writers_of_one_file_at_the_same_moment_never_share_a_temporary_file(tmp_path):
    """Each writer has its own temporary sibling, so concurrent writers all succeed and the file is one of theirs."""
    target = tmp_path / "config.json"
    errors = []

    def write(value: int) -> None:
        try:
            for _ in range(20):
                files.write_json(target, {"writer": value, "padding": "x" * 10_000})
        except BudgetError as error:
            errors.append(error)

    writers = [threading.Thread(target=write, args=(value,)) for value in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors
    assert json.loads(target.read_text())["writer"] in range(4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_held_lock_is_waited_for_then_refused_with_the_reason(tmp_path):
    lines = []
    with files.exclusive(tmp_path / ".lock", "busy"):
        with pytest.raises(BudgetError, match="^busy$"):
            with files.exclusive(tmp_path / ".lock", "busy", wait_seconds=0.3, log=lines.append):
                pass
    assert lines == ["busy; waiting for it (at most 0 s)"]
    with files.exclusive(tmp_path / ".lock", "busy"):  # released: taken again at once
        pass
