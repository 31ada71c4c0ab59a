"""The documentation's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.M | re.S)


def test_the_python_api_example_runs_on_emodb(shared_emodb, emodb_lld_store, tmp_path, monkeypatch, capsys):
    (block,) = python_blocks(DOCS / "python.md")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BUDGET_STORE_DIR", str(emodb_lld_store))
    exec(compile(block.replace('"../shared/data/emodb"', repr(str(shared_emodb))), "docs/python.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "Recommended: lld + " in printed and "per_class" in printed
    assert (tmp_path / "reports" / "emodb-notebook" / "report.html").is_file()
    assert len(list((tmp_path / "runs").iterdir())) == 1
