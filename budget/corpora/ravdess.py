"""RAVDESS (speech, audio-only release) to a manifest.

``Actor_NN/03-01-EE-II-SS-RR-AA.wav``: modality (03 audio-only), vocal
channel (01 speech), emotion, intensity (01 normal, 02 strong), statement,
repetition, actor (odd male, even female).  ``group`` is the actor.  Song
files (vocal channel 02) and the video modalities are not speech-audio and are
skipped.  The files are 48 kHz and some are stereo; audio loading makes them
16 kHz mono.  RAVDESS's licence (CC BY-NC-SA) forbids commercial use: the
toolkit never fetches it, you point at your copy.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import pandas as pd

from budget.corpora.manifest import make_manifest, match_file_names

EMOTION_CODES = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}

_FILE_NAME = re.compile(
    r"^(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)"
    r"-(?P<statement>\d\d)-(?P<repetition>\d\d)-(?P<actor>\d\d)\.wav$"
)


def read_ravdess(root: str | PathLike[str]) -> pd.DataFrame:
    """Read the speech files of a RAVDESS audio-only release."""
    root = Path(root)
    rows = []
    speech = "Actor_01/03-01-05-01-01-01-01.wav"
    for path, match in match_file_names(root.glob("Actor_*/*.wav"), _FILE_NAME, EMOTION_CODES, "ravdess", "RAVDESS", speech):
        if (match["modality"], match["channel"]) != ("03", "01"):
            continue
        actor = match["actor"]
        rows.append(
            {
                "utt_id": path.stem,
                "path": str(path),
                "label": EMOTION_CODES[match["emotion"]],
                "speaker": f"actor{actor}",
                "group": f"actor{actor}",
                "text": STATEMENTS.get(match["statement"], ""),
                "source_label": match["emotion"],
                "intensity": "strong" if match["intensity"] == "02" else "normal",
                "repetition": int(match["repetition"]),
                "gender": "M" if int(actor) % 2 else "F",
            }
        )
    return make_manifest(rows, "ravdess")
