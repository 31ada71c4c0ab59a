"""Audio loading: any file soundfile reads, to 16 kHz mono float32, cropped.

Every problem with a file raises :class:`~budget.errors.AudioError` naming the
file and the reason: missing, empty, unreadable or corrupt, no samples,
non-finite samples, or shorter than one analysis frame.  :func:`scan_audio`
checks a whole manifest from the file headers and reports every bad file at
once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

from budget.errors import AudioError, BudgetError
from budget.progress import progress

SAMPLE_RATE = 16_000
#: Boigne et al. 2020 crop utterances to their first 5 s.
MAX_SECONDS = 5.0
#: The longest analysis window of the toolkit's extractors (the 50 ms LLD frame).
MIN_SECONDS = 0.05


#: libsndfile's note on a data chunk longer than the file ("data : 32000 (should be 15978)").
TRUNCATED_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
#: A streaming writer's placeholder size for a header it never finalised: the file is whole, not cut.
UNFINALISED_SIZE = 0xFFFFFFFF


def _open_info(path: Path):
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"unreadable or corrupt audio ({error})") from error
    note = TRUNCATED_CHUNK.search(info.extra_info)
    declared, present = (int(v) for v in note.groups()) if note else (0, 0)
    if present < declared < UNFINALISED_SIZE:  # libsndfile reads what is there: a cut file would pass as a shorter clip
        raise AudioError(path, f"truncated: its header declares {declared} bytes of audio, the file holds {present}")
    return info


def _check_length(path: Path, frames: int, sample_rate: int, min_seconds: float) -> None:
    if frames <= 0:
        raise AudioError(path, "no audio samples")
    if frames / sample_rate < min_seconds:
        raise AudioError(
            path, f"too short: {frames / sample_rate:.3f} s, shorter than one {min_seconds:.3f} s analysis frame"
        )


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = MAX_SECONDS,
    min_seconds: float = MIN_SECONDS,
) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``, keeping its first ``max_seconds``.

    Channels are averaged; resampling uses soxr's high-quality filter.
    ``max_seconds=None`` keeps the whole file.
    """
    path = Path(path)
    info = _open_info(path)
    _check_length(path, info.frames, info.samplerate, min_seconds)
    frames = -1 if max_seconds is None else min(info.frames, int(round(max_seconds * info.samplerate)))
    try:
        data, source_rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"unreadable or corrupt audio ({error})") from error
    _check_length(path, len(data), source_rate, min_seconds)
    wave = data.mean(axis=1)
    if not np.isfinite(wave).all():
        raise AudioError(path, "audio contains NaN or infinite samples")
    if source_rate != sample_rate:
        wave = soxr.resample(wave, source_rate, sample_rate, quality="HQ")
    if max_seconds is not None:
        wave = wave[: int(round(max_seconds * sample_rate))]
    return np.ascontiguousarray(wave, dtype=np.float32)


@dataclass(frozen=True)
class AudioScan:
    """A manifest split into usable utterances and the files that failed."""

    usable: pd.DataFrame  # the manifest's good rows, with duration, sample_rate, channels
    problems: pd.DataFrame  # utt_id, path, reason

    def raise_if_problems(self) -> None:
        """Raise one error listing every bad file (for ``--strict``)."""
        if not self.problems.empty:
            lines = [f"{row.path}: {row.reason}" for row in self.problems.itertuples()]
            raise BudgetError(f"{len(lines)} bad audio file(s): " + "; ".join(lines))


def scan_audio(manifest: pd.DataFrame, min_seconds: float = MIN_SECONDS) -> AudioScan:
    """Check every file of a manifest from its header, reporting all problems at once."""
    durations, rates, channels, problems = [], [], [], []
    keep = np.zeros(len(manifest), dtype=bool)
    rows = zip(manifest["utt_id"], manifest["path"], strict=True)
    for i, (utt_id, path) in enumerate(progress(rows, len(manifest), "checking audio", unit="file")):
        try:
            info = _open_info(Path(path))
            _check_length(Path(path), info.frames, info.samplerate, min_seconds)
        except AudioError as error:
            problems.append({"utt_id": utt_id, "path": error.path, "reason": error.reason})
            continue
        keep[i] = True
        durations.append(info.frames / info.samplerate)
        rates.append(info.samplerate)
        channels.append(info.channels)
    usable = manifest[keep].copy()
    usable["duration"] = durations
    usable["sample_rate"] = rates
    usable["channels"] = channels
    return AudioScan(usable.reset_index(drop=True), pd.DataFrame(problems, columns=["utt_id", "path", "reason"]))


def usable_audio(manifest: pd.DataFrame, strict: bool = False, min_seconds: float = MIN_SECONDS) -> AudioScan:
    """:func:`scan_audio`, stopping on any bad file with ``strict``, and an error when no file is usable."""
    scan = scan_audio(manifest, min_seconds)
    if strict:
        scan.raise_if_problems()
    if scan.usable.empty:
        raise BudgetError(f"none of the {len(manifest)} audio files is usable")
    return scan
