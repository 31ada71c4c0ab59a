"""EmoDB (Berlin Database of Emotional Speech) to a manifest.

File names carry everything: ``03a01Fa.wav`` is speaker ``03``, text code
``a01``, emotion letter ``F`` (German initial: Freude, happiness), version
``a``.  Ten speakers speak the same ten sentences in each of seven emotions;
``group`` is the speaker (10 folds).  The root is the folder holding ``wav/``
(as unpacked from the official zip) or the ``wav/`` folder itself.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import pandas as pd

from budget.corpora.manifest import make_manifest, match_file_names

#: The official download, as published by the corpus authors (fetched over https where the host answers it).
EMODB_URL = "https://emodb.bilderbar.info/download/download.zip"
EMODB_UTTERANCES = 535

EMOTION_LETTERS = {
    "W": "angry",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fearful",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}
SENTENCES = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
SPEAKER_GENDER = {
    "03": "M", "08": "F", "09": "F", "10": "M", "11": "M",
    "12": "M", "13": "F", "14": "F", "15": "M", "16": "F",
}  # fmt: skip

_FILE_NAME = re.compile(r"^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[A-Z])(?P<version>[a-z])\.wav$")


def emodb_wav_dir(root: Path) -> Path:
    """The folder holding EmoDB's wavs: ``root/wav`` or ``root`` itself."""
    return root / "wav" if (root / "wav").is_dir() else root


def read_emodb(root: str | PathLike[str]) -> pd.DataFrame:
    """Read EmoDB from its file names."""
    root = Path(root)
    wav_dir = emodb_wav_dir(root)
    rows = []
    for path, match in match_file_names(
        wav_dir.glob("*.wav"), _FILE_NAME, EMOTION_LETTERS, "emodb", "EmoDB", "03a01Fa.wav", wav_dir
    ):
        speaker = match["speaker"]
        rows.append(
            {
                "utt_id": path.stem,
                "path": str(path),
                "label": EMOTION_LETTERS[match["emotion"]],
                "speaker": speaker,
                "group": speaker,
                "text": SENTENCES.get(match["text"], ""),
                "source_label": match["emotion"],
                "text_code": match["text"],
                "version": match["version"],
                "gender": SPEAKER_GENDER.get(speaker, ""),
            }
        )
    return make_manifest(rows, "emodb")
