"""CREMA-D to a manifest.

``AudioWAV/1001_DFA_ANG_XX.wav``: actor (1001-1091), sentence code, emotion
(ANG, DIS, FEA, HAP, NEU, SAD), intensity level (LO, MD, HI, XX unspecified).
``group`` is the actor.  The root is the folder holding ``AudioWAV/`` or that
folder itself.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import pandas as pd

from budget.corpora.manifest import make_manifest, match_file_names

EMOTION_CODES = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}

_FILE_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})\.wav$")


def read_cremad(root: str | PathLike[str]) -> pd.DataFrame:
    """Read CREMA-D from its file names."""
    root = Path(root)
    wav_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    rows = []
    for path, match in match_file_names(
        wav_dir.glob("*.wav"), _FILE_NAME, EMOTION_CODES, "crema-d", "CREMA-D", "1001_DFA_ANG_XX.wav", wav_dir
    ):
        rows.append(
            {
                "utt_id": path.stem,
                "path": str(path),
                "label": EMOTION_CODES[match["emotion"]],
                "speaker": match["actor"],
                "group": match["actor"],
                "text": SENTENCES.get(match["sentence"], ""),
                "source_label": match["emotion"],
                "sentence": match["sentence"],
                "level": LEVELS.get(match["level"], match["level"]),
            }
        )
    return make_manifest(rows, "crema-d")
