"""Audio loading: any file soundfile reads, to 16 kHz mono float32, cropped.

Every problem with a file raises :class:`~budget.errors.AudioError` naming the
file and the reason: missing, empty, unreadable or corrupt, no samples,
non-finite samples, or shorter than one analysis frame.  :func:`scan_audio`
checks a whole manifest, headers and the samples a study reads, and reports
every bad file at once, with the usable files a person should look at: silent
ones, and ones too short to carry an emotion (:data:`SHORT_SECONDS`).
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
#: Shorter clips are usable but noted: a fifth of a second is about one syllable, too little to carry an emotion's
#: prosody, and far below the shortest utterances of IEMOCAP, EmoDB, RAVDESS, CREMA-D and MSP-Podcast.
SHORT_SECONDS = 0.2
#: A clip whose loudest sample is below this (-80 dBFS, three steps of 16-bit audio) is noted as silent.
SILENT_PEAK = 1e-4


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


def _peak(path: Path, info, max_seconds: float | None) -> float:
    """The loudest sample of the part a study reads (the first ``max_seconds``), read in blocks; an
    :class:`AudioError` for samples that are not finite."""
    frames = info.frames if max_seconds is None else min(info.frames, int(round(max_seconds * info.samplerate)))
    peak = 0.0
    try:
        for block in sf.blocks(str(path), blocksize=1 << 18, frames=frames, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError(path, "audio contains NaN or infinite samples")
            peak = max(peak, float(np.abs(block).max(initial=0.0)))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"unreadable or corrupt audio ({error})") from error
    return peak


@dataclass(frozen=True)
class AudioScan:
    """A manifest split into usable utterances and the files that failed, with notes on usable files."""

    usable: pd.DataFrame  # the manifest's good rows, with duration, sample_rate, channels
    problems: pd.DataFrame  # utt_id, path, reason: left out
    notes: pd.DataFrame  # utt_id, path, note: usable, but silent or very short

    def raise_if_problems(self) -> None:
        """Raise one error listing every bad file and every noted one (for ``--strict``)."""
        listed = [*self.problems.itertuples(), *self.notes.itertuples()]
        if listed:
            lines = [f"{row.path}: {getattr(row, 'reason', None) or row.note}" for row in listed]
            raise BudgetError(f"{len(lines)} bad audio file(s) under --strict: " + "; ".join(lines))


def scan_audio(manifest: pd.DataFrame, min_seconds: float = MIN_SECONDS, max_seconds: float | None = MAX_SECONDS) -> AudioScan:
    """Check every file of a manifest, its header and the samples a study reads (the first ``max_seconds``),
    reporting all problems at once."""
    durations, rates, channels, problems, notes = [], [], [], [], []
    keep = np.zeros(len(manifest), dtype=bool)
    rows = zip(manifest["utt_id"], manifest["path"], strict=True)
    for i, (utt_id, path) in enumerate(progress(rows, len(manifest), "checking audio", unit="file")):
        try:
            info = _open_info(Path(path))
            _check_length(Path(path), info.frames, info.samplerate, min_seconds)
            peak = _peak(Path(path), info, max_seconds)
        except AudioError as error:
            problems.append({"utt_id": utt_id, "path": error.path, "reason": error.reason})
            continue
        keep[i] = True
        durations.append(info.frames / info.samplerate)
        rates.append(info.samplerate)
        channels.append(info.channels)
        if peak < SILENT_PEAK:
            read = "" if max_seconds is None or durations[-1] <= max_seconds else f" in its first {max_seconds:g} s"
            notes.append({"utt_id": utt_id, "path": str(path), "note": f"silent: its loudest sample{read} is {_dbfs(peak)}"})
        if durations[-1] < SHORT_SECONDS:
            notes.append({"utt_id": utt_id, "path": str(path),
                          "note": f"very short: {durations[-1]:.3f} s, under {SHORT_SECONDS:g} s"})  # fmt: skip
    usable = manifest[keep].copy()
    usable["duration"] = durations
    usable["sample_rate"] = rates
    usable["channels"] = channels
    return AudioScan(usable.reset_index(drop=True), pd.DataFrame(problems, columns=["utt_id", "path", "reason"]),
                     pd.DataFrame(notes, columns=["utt_id", "path", "note"]))  # fmt: skip


def notes_summary(notes: pd.DataFrame) -> str:
    """An :class:`AudioScan`'s notes in one phrase: how many files are silent, how many very short."""
    kinds = notes["note"].str.split(":").str[0].value_counts()
    return ", ".join(f"{count} {kind}" for kind, count in kinds.items())


def _dbfs(peak: float) -> str:
    return "0 (digital silence)" if peak == 0 else f"{20 * np.log10(peak):.0f} dBFS"


def usable_audio(manifest: pd.DataFrame, strict: bool = False, min_seconds: float = MIN_SECONDS,
                 max_seconds: float | None = MAX_SECONDS) -> AudioScan:  # fmt: skip
    """:func:`scan_audio`, stopping on any bad or noted file with ``strict``, and an error when no file is usable."""
    scan = scan_audio(manifest, min_seconds, max_seconds)
    if strict:
        scan.raise_if_problems()
    if scan.usable.empty:
        raise BudgetError(f"none of the {len(manifest)} audio files is usable")
    return scan
