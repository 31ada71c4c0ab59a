"""The package's layout, as the README's Development section draws it: data flows one way."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "budget"
#: The rooms in the README's order: a module imports only rooms listed before its own.
ORDER = ["errors", "files", "progress", "labels", "metrics", "settings", "audio", "corpora", "features", "folds",
         "sampling", "strategies", "results", "grid", "heads", "engine", "bimodal", "registry", "acquisition",
         "runfolder", "execute", "provenance", "analysis", "study", "plots", "report", "api", "cli"]  # fmt: skip
IMPORT = re.compile(r"^\s*from budget(?:\.(\w+))?[\w.]* import ([\w, ()\n]+?)(?:$|#)", re.M)


def _imported_rooms(text: str) -> set[str]:
    rooms = set()
    for room, names in IMPORT.findall(text):
        rooms |= {room} if room else {n.strip() for n in names.replace("(", "").replace(")", "").split(",") if n.strip()}
    return rooms & set(ORDER)


def test_no_module_imports_one_below_it_in_the_data_flow():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        room = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if room in ORDER:
            upward += [f"{path.relative_to(PACKAGE)} imports {other}" for other in _imported_rooms(path.read_text())
                       if ORDER.index(other) > ORDER.index(room)]  # fmt: skip
    assert not upward
    assert {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in PACKAGE.rglob("*.py")} - {"__init__"} == set(ORDER)


def test_the_readme_draws_the_same_layout():
    readme = (PACKAGE.parent / "README.md").read_text()
    drawn = readme[readme.index("## Development") :].split("```")[1].splitlines()
    named = [line.split("  ")[0].replace(".py", "").replace("/", "").split() for line in drawn if line.strip()]
    assert [room for names in named for room in names] == ORDER
