"""IEMOCAP (full release) to a manifest.

Layout read::

    Session1..5/dialog/EmoEvaluation/<dialog>.txt      labels
    Session1..5/dialog/transcriptions/<dialog>.txt     text
    Session1..5/sentences/wav/<dialog>/<utt_id>.wav    audio

Each evaluation block opens with a header line that carries the consensus
category, e.g. ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``
(start, end, id, category, valence/activation/dominance); the annotator lines
under it (``C-E2: ...``, ``A-E3: ...``) are not utterances and are ignored.

Every category is kept here (``hap``, ``exc``, ``fru``, ``xxx``...); the
adapter's default class spec, ``iemocap4``, then keeps neutral, happy with
excited merged in, sad and angry.  On the real corpus this yields 5,531
utterances (neutral 1,708, happy 1,636, angry 1,103, sad 1,084; sessions
1,085 / 1,023 / 1,151 / 1,031 / 1,241), the set Boigne et al. 2020 and most
IEMOCAP studies use.  ``group`` is the session (5 folds), ``speaker`` the
session plus the actor's gender letter (``Ses01F_impro01_M003`` is ``Ses01M``).
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import pandas as pd

from budget.corpora.manifest import make_manifest
from budget.errors import BudgetError
from budget.labels import canonical_label

_HEADER = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<utt>\S+)\s+(?P<cat>\S+)\s+\[(?P<vad>[^\]]*)\]"
)
_UTT_ID = re.compile(r"^Ses\d\d[FM]_.+_[FM]\d+$")
_TRANSCRIPT = re.compile(r"^(?P<utt>\S+)\s+\[[^\]]*\]:\s?(?P<text>.*)$")


def read_evaluation(path: Path) -> list[dict[str, object]]:
    """Parse one EmoEvaluation file into rows of its header lines."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _HEADER.match(line)
        if not match or not _UTT_ID.match(match["utt"]):
            continue
        vad = [float(v) for v in match["vad"].split(",") if v.strip()]
        valence, activation, dominance = (vad + [float("nan")] * 3)[:3]
        rows.append(
            {
                "utt_id": match["utt"],
                "source_label": match["cat"],
                "start": float(match["start"]),
                "end": float(match["end"]),
                "valence": valence,
                "activation": activation,
                "dominance": dominance,
            }
        )
    return rows


def read_transcription(path: Path) -> dict[str, str]:
    """Map utterance id to text for one dialog's transcription file."""
    texts = {}
    if not path.is_file():
        return texts
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TRANSCRIPT.match(line.strip())
        if match and _UTT_ID.match(match["utt"]):
            texts[match["utt"]] = match["text"].strip()
    return texts


def read_iemocap(root: str | PathLike[str]) -> pd.DataFrame:
    """Read every labelled utterance of an IEMOCAP release (all categories)."""
    root = Path(root)
    sessions = sorted(p for p in root.glob("Session[1-9]") if p.is_dir())
    if not sessions:
        raise BudgetError(f"iemocap: no Session1..5 folders under {root}; point --root at IEMOCAP_full_release")
    rows = []
    for session_dir in sessions:
        session = int(session_dir.name.removeprefix("Session"))
        evaluations = sorted(
            p for p in (session_dir / "dialog" / "EmoEvaluation").glob("*.txt") if not p.name.startswith(".")
        )
        for evaluation in evaluations:
            dialog = evaluation.stem
            texts = read_transcription(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt")
            for row in read_evaluation(evaluation):
                utt_id = str(row["utt_id"])
                gender = utt_id.rsplit("_", 1)[1][0]
                rows.append(
                    {
                        **row,
                        "path": str(session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"),
                        "label": canonical_label(str(row["source_label"])),
                        "speaker": f"Ses{session:02d}{gender}",
                        "group": f"Ses{session:02d}",
                        "text": texts.get(utt_id, ""),
                        "session": session,
                        "dialog": dialog,
                        "mode": "script" if "_script" in dialog else "impro",
                        "gender": gender,
                    }
                )
    return make_manifest(rows, "iemocap")
