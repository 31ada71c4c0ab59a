"""The feature store: extract once, reuse everywhere.

:class:`FeatureStore` orchestrates: it extracts what an entry lacks (several
layers of one encoder in one forward pass), and loads a manifest's features as
a :class:`~budget.features.featureset.FeatureSet`.  What an entry is on disk
(layout, keys, atomic shards, locking) is :mod:`budget.features.entries`.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from budget import files
from budget.audio import SAMPLE_RATE, load_audio
from budget.errors import AudioError, BudgetError, ModelLoadError, check_number
from budget.features.base import FeatureExtractor, length_batches
from budget.features.distributed import LOCAL, Where, cluster, extract_on_cluster
from budget.features.entries import (
    DEFAULT_SETTINGS,
    EXTRACTOR_FAILED,
    SHARD_ARRAYS,
    Entry,
    EntrySettings,
    default_store_dir,
    to_extract,
)
from budget.features.featureset import FeatureSet, MappedFrames
from budget.progress import progress_bar


@dataclass(frozen=True)
class ExtractionReport:
    """What one extraction run did."""

    spec: str
    device: str
    precision: str
    entry: Path
    requested: int
    cached: int
    extracted: int
    failures: pd.DataFrame  # utt_id, reason: this run's and earlier runs' failures among the requested
    seconds: float
    audio_seconds: float

    @property
    def utterances_per_second(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else float("nan")

    @property
    def real_time_factor(self) -> float:
        """Processing time over audio duration (lower is faster)."""
        return self.seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


#: Extraction commits a shard once it holds this many utterances, or its targets hold this many bytes of frames, or
#: this many seconds have passed since the last commit (and when the run ends or stops): a store is then a file per few hundred utterances,
#: not per batch (an encoder whose output padding would change batches equal lengths alone: one utterance a batch
#: on real audio, and 400,000 files for MSP-Podcast), and a killed run loses at most a shard's worth of work.
SHARD_UTTERANCES = 256
SHARD_BYTES = 2**26
SHARD_SECONDS = 60.0


@dataclass
class _Target:
    """One entry an extraction writes: its extractor, what it lacks, which layer of a shared pass is its own, and
    the rows it holds until they fill a shard."""

    extractor: FeatureExtractor
    entry: Entry
    identity: dict
    keys: list[str]
    todo: list[int]
    column: int | None  # its layer's position in a shared pass's output; None: the output is its own
    known: pd.DataFrame | None
    held: list[tuple[str, str, np.ndarray | None, str]] = field(default_factory=list)  # key, utt_id, output, reason

    def commit(self, dtype: str) -> None:
        """Write what is held as one shard (rows whose write fails are not stored: extracted again next time)."""
        rows, self.held = self.held, []
        if rows:
            keys, utt_ids, outputs, reasons = (list(column) for column in zip(*rows, strict=True))
            self.entry.write_shard(keys, utt_ids, outputs, reasons, dtype)


def _shard_full(targets: list[_Target], since: float) -> bool:
    """Whether the rows the targets hold (a shared pass's layers: views of the same outputs, counted once each)
    make a shard, the last one committed at ``since``."""
    return (max(len(target.held) for target in targets) >= SHARD_UTTERANCES
            or time.perf_counter() - since >= SHARD_SECONDS
            or sum(output.nbytes for target in targets for _, _, output, _ in target.held if output is not None) >= SHARD_BYTES)  # fmt: skip


@dataclass(frozen=True)
class Footprint:
    """What loading a feature set reads: utterances, frames, values in a frame (every layer of an ``:all`` entry, or
    the one picked) and bytes a stored value takes."""

    utterances: int
    frames: int
    width: int
    itemsize: int


class FeatureStore:
    """An on-disk store of frame-level features, keyed by extractor and utterance identity."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_store_dir()

    # -- writing -----------------------------------------------------------------------------

    def extract(
        self,
        extractor: FeatureExtractor,
        manifest: pd.DataFrame,
        settings: EntrySettings = DEFAULT_SETTINGS,
        *,
        batch_size: int | None = None,
        batch_seconds: float = 160.0,
        executor: Where = LOCAL,
    ) -> ExtractionReport:
        """Extract what the store lacks for ``manifest`` under ``settings``; return what was done.

        Batches hold utterances of similar length (at most ``batch_size``
        utterances and ``batch_seconds`` of padded audio).  The default batch
        is 16 on CUDA and 8 on a CPU, where larger batches do not run faster
        (benchmarks/extraction.py measures it).
        Utterances that fail (bad audio, too short for the model) are recorded
        and skipped.  ``executor``: see :meth:`extract_all`.
        """
        (report,) = self.extract_all([extractor], manifest, settings, batch_size=batch_size, batch_seconds=batch_seconds,
                                     executor=executor)  # fmt: skip
        return report

    def extract_all(
        self,
        extractors: list[FeatureExtractor],
        manifest: pd.DataFrame,
        settings: EntrySettings = DEFAULT_SETTINGS,
        *,
        batch_size: int | None = None,
        batch_seconds: float = 160.0,
        executor: Where = LOCAL,
    ) -> list[ExtractionReport]:
        """:meth:`extract` for several specs, in order; specs of one encoder that differ only in layer share one
        forward pass per batch (``hf:M:2`` and ``hf:M`` run the model once).  On Ray (``executor``), the batches
        run on a cluster's workers (:mod:`budget.features.distributed`)."""
        if batch_size is not None:  # None: the device's default
            check_number("batch_size", batch_size, integer=True, minimum=1)
        groups: dict[object, list[FeatureExtractor]] = {}
        for extractor in extractors:
            groups.setdefault(extractor.shared_pass_key() or id(extractor), []).append(extractor)
        reports: dict[int, ExtractionReport] = {}
        with cluster(executor):  # one Ray cluster for every group
            for group in groups.values():
                extracted = self._extract_group(group, manifest, settings, batch_size, batch_seconds, executor)
                for extractor, report in zip(group, extracted, strict=True):
                    reports[id(extractor)] = report
        return [reports[id(extractor)] for extractor in extractors]

    def _extract_group(
        self, group, manifest, settings: EntrySettings, batch_size, batch_seconds, executor: Where
    ) -> list[ExtractionReport]:  # fmt: skip
        """Extract for extractors that share a forward pass: one run over what any of their entries lacks."""
        started = time.perf_counter()
        runner = group[0] if len(group) == 1 else group[0].sharing_pass(group)
        batch_size = batch_size or (16 if runner.device.startswith("cuda") else 8)
        keys = settings.utterance_keys(runner, manifest)  # one modality per group: read files once
        targets = []
        for column, extractor in enumerate(group):
            identity, entry = settings.identity(extractor), settings.entry(self.root, extractor)
            known = entry.index() if entry.shards.is_dir() else None  # committed shards only: safe beside a writer
            column = None if len(group) == 1 else column
            targets.append(_Target(extractor, entry, identity, keys, to_extract(keys, known), column, known))
        audio_seconds = 0.0
        if any(t.todo for t in targets):  # only a writer takes the lock: studies that find everything stored share it
            runner.load()  # a model that cannot load stops here, before any entry is made or utterance read
            with ExitStack() as locks:
                for target in targets:
                    locks.enter_context(target.entry.lock())
                    target.entry.sweep()
                    target.todo = to_extract(target.keys, target.entry.index())
                timed, passed = time.perf_counter(), len(set().union(*(t.todo for t in targets)))
                audio_seconds = self._run(targets, runner, manifest, settings, batch_size, batch_seconds, executor)
                timed = time.perf_counter() - timed
                for target in targets:
                    target.known = target.entry.index()
                    if not target.entry.described() and len(target.known):
                        self._describe(target.entry, target.extractor, target.identity, None)  # all failed: listed
                    if target.todo and target.entry.described():  # a shared pass's time is each layer's cost
                        target.entry.record_extraction(timed, passed, runner.device)
        reports = []
        for target in targets:
            requested = target.known.reindex(target.keys)
            failed = requested[requested["ok"] == False]  # noqa: E712 (pandas element-wise)
            extracted = requested["ok"].iloc[target.todo] == True  # noqa: E712 (this run's work that succeeded)
            reports.append(
                ExtractionReport(
                    spec=target.extractor.spec,
                    device=target.extractor.device,
                    precision=target.extractor.precision,
                    entry=target.entry.folder,
                    requested=len(target.keys),
                    cached=len(target.keys) - len(target.todo),
                    extracted=int(extracted.sum()),
                    failures=pd.DataFrame({"utt_id": failed["utt_id"].to_numpy(), "reason": failed["reason"].to_numpy()}),
                    seconds=time.perf_counter() - started,
                    audio_seconds=audio_seconds,
                )
            )
        return reports

    @staticmethod
    def _describe(entry: Entry, extractor: FeatureExtractor, identity: dict, frame_shape: tuple[int, ...] | None) -> None:
        """Write entry.json once the first output shows the frame shape (None while every utterance failed)."""
        meta = {
            "spec": extractor.spec,
            "identity": identity,
            "frame_shape": None if frame_shape is None else list(frame_shape),
            "layer_names": extractor.layer_names(),
            "frame_rate": extractor.frame_rate,
            "modality": extractor.modality,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        files.write_json(entry.folder / "entry.json", meta)

    @staticmethod
    def _input(extractor: FeatureExtractor, row, max_seconds):
        if extractor.modality == "text":
            return str(row["text"])
        return load_audio(row["path"], max_seconds=max_seconds)

    def _run(self, targets: list[_Target], runner, manifest, settings: EntrySettings, batch_size, batch_seconds,
             executor: Where) -> float:  # fmt: skip
        """Extract what any target lacks, batch by batch, with one pass of ``runner`` per batch (here, or on
        ``executor``'s workers); each target commits one shard per batch holding its own missing rows (its layer,
        where the pass serves several).  Return the audio seconds read."""
        needed = [set(t.todo) for t in targets]
        todo = sorted(set().union(*needed))
        if not todo:
            return 0.0
        rows = manifest.iloc[todo]
        max_seconds = settings.max_seconds
        lengths = self._lengths(runner, rows, max_seconds)
        max_total = int(batch_seconds * SAMPLE_RATE) if runner.modality == "audio" else 1 << 62
        batches = length_batches(lengths, batch_size, max_total, exact=not runner.pads_exactly)
        read = (self._read_batch(runner, manifest, [todo[i] for i in batch], max_seconds) for batch in batches)
        if executor.local:
            extracted = ((p, x, r, self._extract_batch(runner, x, r)) for p, x, r in read)
        else:
            import torch

            extracted = extract_on_cluster(executor, runner, read, FeatureStore._extract_batch, torch.get_num_threads())
        audio_seconds, since = 0.0, time.perf_counter()
        with progress_bar(len(todo), f"extracting {', '.join(t.extractor.spec for t in targets)}", unit="utt") as advance:
            try:
                for positions, inputs, reasons, outputs in extracted:
                    if runner.modality == "audio":
                        audio_seconds += sum(len(x) for x in inputs if x is not None) / SAMPLE_RATE
                    for target, wanted in zip(targets, needed, strict=True):
                        own = [i for i, p in enumerate(positions) if p in wanted]
                        mine = [outputs[i] if outputs[i] is None or target.column is None else outputs[i][:, target.column]
                                for i in own]  # fmt: skip
                        shapes = [o.shape[1:] for o in mine if o is not None]
                        if shapes and not target.entry.described():
                            self._describe(target.entry, target.extractor, target.identity, shapes[0])
                        target.held.extend((target.keys[positions[i]], manifest["utt_id"].iloc[positions[i]], output,
                                            reasons[i]) for i, output in zip(own, mine, strict=True))  # fmt: skip
                    if _shard_full(targets, since):
                        for target in targets:
                            target.commit(settings.frame_dtype)
                        since = time.perf_counter()
                    advance(len(positions))
            finally:  # the end, or an interrupt: what is extracted is kept
                for target in targets:
                    target.commit(settings.frame_dtype)
        return audio_seconds

    def _read_batch(self, runner, manifest, positions: list[int], max_seconds) -> tuple[list[int], list, list[str]]:
        """A batch's inputs, read here (audio or text), with the reason for each that cannot be read."""
        inputs, reasons = [], []
        for p in positions:
            try:
                inputs.append(self._input(runner, manifest.iloc[p], max_seconds))
                reasons.append("")
            except AudioError as error:
                inputs.append(None)
                reasons.append(error.reason)
        return positions, inputs, reasons

    @staticmethod
    def _extract_batch(extractor, inputs, reasons) -> list[np.ndarray | None]:
        """Run the extractor on the loadable inputs; when the batch fails, retry one by one to isolate it."""
        ready = [i for i, x in enumerate(inputs) if x is not None]
        outputs: list[np.ndarray | None] = [None] * len(inputs)
        if not ready:
            return outputs
        failed = False
        try:
            results = extractor.extract([inputs[i] for i in ready])
        except ModelLoadError:
            raise  # the model itself, not this batch: stop with one error rather than fail every utterance
        except (BudgetError, RuntimeError) as error:  # RuntimeError: torch refusing an input, or out of memory
            if len(ready) == 1:
                reasons[ready[0]] = f"{EXTRACTOR_FAILED}: {error}"
                return outputs
            failed = True
        if failed:  # retried outside the handler: its traceback held the failed batch's device memory
            results = []
            for i in ready:
                own_reason = [""]
                results.append(FeatureStore._extract_batch(extractor, [inputs[i]], own_reason)[0])
                reasons[i] = own_reason[0]
        for i, result in zip(ready, results, strict=True):
            outputs[i] = result
        return outputs

    @staticmethod
    def _lengths(extractor, rows: pd.DataFrame, max_seconds) -> list[int]:
        """Input lengths for batching: cropped samples at 16 kHz from headers, or characters."""
        if extractor.modality == "text":
            return [len(str(t)) for t in rows["text"]]
        limit = float("inf") if max_seconds is None else max_seconds
        lengths = []
        for path in rows["path"]:
            try:
                info = sf.info(str(path))
                seconds = min(info.frames / info.samplerate, limit)
            except (sf.LibsndfileError, RuntimeError, OSError):
                seconds = 0.0  # fails again, with its reason, when loaded
            lengths.append(int(round(seconds * SAMPLE_RATE)))
        return lengths

    # -- reading -----------------------------------------------------------------------------

    def load(
        self, extractor: FeatureExtractor, manifest: pd.DataFrame, settings: EntrySettings = DEFAULT_SETTINGS, *,
        layer: int | None = None, frames: bool = True, mapped: bool = False,
    ) -> FeatureSet:  # fmt: skip
        """The stored features of ``manifest``'s utterances, in its order, under ``settings``.

        ``layer`` picks one hidden state from an entry that stored them all, and
        only its frames are read; without ``frames``, only the per-utterance
        statistics are (what heads that pool first train on); with ``mapped``,
        the frames stay in the store's files, read as training asks for them
        (:class:`MappedFrames`).  Raises when nothing was extracted for this
        configuration.
        """
        entry = settings.entry(self.root, extractor)
        if not entry.described():
            failed = entry.index() if entry.shards.is_dir() else pd.DataFrame()
            if len(failed):
                reasons = failed["reason"].value_counts()
                raise BudgetError(
                    f"every utterance failed extraction for {extractor.spec} ({len(failed)}; most often: "
                    f"{reasons.index[0]}); fix the cause and run again: failures are retried"
                )
            raise BudgetError(f"no stored features for {extractor.spec} with these settings; run `budget extract` first")
        meta = entry.meta()
        layer_names = meta["layer_names"]
        if layer is not None and layer_names is None:
            raise BudgetError(f"{extractor.spec} stored one layer; a layer can only be picked from an 'all' entry")
        if layer is not None and not 0 <= layer < len(layer_names):
            raise BudgetError(f"{extractor.spec}: layer {layer} out of range 0..{len(layer_names) - 1}")
        index = entry.index()
        keys = settings.utterance_keys(extractor, manifest)
        found = index.reindex(keys)
        usable = (found["ok"] == True).to_numpy()  # noqa: E712 (pandas element-wise)
        rows = found[usable].astype({"offset": np.int64, "n_frames": np.int64, "row": np.int64})
        pick = (slice(None),) if layer is None else (slice(None), layer)  # a row's whole frame, or one of its layers
        opened: dict[str, tuple[np.ndarray, ...]] = {}
        sequences, means, maxes = [], [], []
        for shard, offset, n, row in zip(rows["shard"], rows["offset"], rows["n_frames"], rows["row"], strict=True):
            if shard not in opened:
                opened[shard] = tuple(
                    np.load(entry.shards / f"{shard}.{part}.npy", mmap_mode="r") for part in SHARD_ARRAYS
                )
            shard_frames, shard_mean, shard_max = opened[shard]
            if frames and not mapped:  # memory-mapped: only these rows (of this layer) are read
                sequences.append(shard_frames[offset : offset + n][pick])
            means.append(shard_mean[row][pick[1:]])
            maxes.append(shard_max[row][pick[1:]])
        shape = tuple(meta["frame_shape"])[0 if layer is None else 1 :]
        lengths = np.array(rows["n_frames"], dtype=np.int64)  # a writable copy (torch reads it)
        mean = np.stack(means) if means else np.zeros((0, *shape), np.float32)
        maximum = np.stack(maxes) if maxes else np.zeros((0, *shape), np.float32)
        stored = None
        if frames and mapped and len(rows):
            shards = list(dict.fromkeys(rows["shard"]))
            files = [entry.shards / f"{shard}.{SHARD_ARRAYS[0]}.npy" for shard in shards]
            number = {shard: i for i, shard in enumerate(shards)}
            stored = MappedFrames(files, rows["shard"].map(number).to_numpy(), rows["offset"].to_numpy(), lengths, layer)
        elif frames:
            stored = np.concatenate(sequences) if sequences else np.zeros((0, *shape), np.float16)
        return FeatureSet(
            spec=extractor.spec,
            utt_ids=manifest["utt_id"].to_numpy()[usable],
            lengths=lengths,
            offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            frames=stored,
            mean=np.asarray(mean, dtype=np.float32),
            max=np.asarray(maximum, dtype=np.float32),
            layer_names=None if layer is not None else layer_names,
            missing=list(manifest["utt_id"].to_numpy()[~usable]),
        )

    def footprint(self, extractor: FeatureExtractor, manifest: pd.DataFrame, settings: EntrySettings = DEFAULT_SETTINGS,
                  *, layer: int | None = None) -> Footprint:  # fmt: skip
        """What :meth:`load` would read for ``manifest`` (of ``layer``), from the entry's index alone: nothing is
        loaded.  An empty footprint where nothing is stored."""
        entry = settings.entry(self.root, extractor)
        if not entry.described():
            return Footprint(0, 0, 0, 0)
        meta = entry.meta()
        shape = tuple(meta["frame_shape"] or ())[0 if layer is None else 1 :]
        found = entry.index().reindex(settings.utterance_keys(extractor, manifest))
        usable = (found["ok"] == True).to_numpy()  # noqa: E712 (pandas element-wise)
        frames = int(found.loc[usable, "n_frames"].astype(np.int64).sum())
        return Footprint(int(usable.sum()), frames, int(np.prod(shape)) if shape else 0, np.dtype(settings.frame_dtype).itemsize)

    def summary(self) -> pd.DataFrame:
        """One row per stored entry: spec, frame shape, utterances, failures, frames, size on disk."""
        rows = []
        for folder in sorted(p for p in self.root.glob("*") if (p / "entry.json").is_file()):
            entry = Entry(folder)
            meta = entry.meta()
            index = entry.index().drop_duplicates("utt_id", keep="last")  # an utterance's latest version; older ones superseded
            ok = index["ok"] == True  # noqa: E712 (pandas element-wise)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            audio = meta["identity"].get("audio") or {}
            rows.append(
                {
                    "spec": meta["spec"],
                    "entry": folder.name,
                    "frame_shape": "x".join(str(d) for d in meta["frame_shape"] or ["-"]),
                    "layers": len(meta["layer_names"]) if meta["layer_names"] else 1,
                    "max_seconds": audio.get("max_seconds"),
                    "utterances": int(ok.sum()),
                    "failures": int((~ok).sum()),
                    "frames": int(index.loc[ok, "n_frames"].sum()),
                    "identity": (meta["identity"].get("audio") or {}).get("utterance_identity", "transcript"),
                    "size_mb": size / 2**20,
                }
            )
        return pd.DataFrame(
            rows,
            columns=["spec", "entry", "frame_shape", "layers", "max_seconds", "utterances", "failures", "frames", "identity", "size_mb"],
        )

    def failures(self, entry_name: str) -> pd.DataFrame:
        """The failed utterances of one entry (by folder name), with reasons."""
        index = Entry(self.root / entry_name).index()
        failed = index[index["ok"] == False]  # noqa: E712 (pandas element-wise)
        return failed[["utt_id", "reason"]].reset_index(drop=True)
