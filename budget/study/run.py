"""A study in its run folder: the corpus scanned, features extracted and loaded, the grid built and executed.

Running a study again skips the runs its parts already hold, so a crash or
Ctrl-C loses only the group in flight.  A run folder belongs to one
configuration: reusing it with other settings is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from budget.analysis import BUDGETS, cell_budgets, convergence_table
from budget.audio import AudioScan, notes_summary, usable_audio
from budget.corpora import get_adapter
from budget.corpora.fetch import load_fetching
from budget.engine.config import TrainConfig
from budget.engine.device import products_phrase, with_products
from budget.errors import BudgetError
from budget.execute import Trainer, make_executor
from budget.features import ExtractionReport, FeatureStore, parse_feature_spec
from budget.features.base import FeatureExtractor, resolve_device
from budget.features.distributed import cluster
from budget.features.featureset import FeatureSet
from budget.features.layers import FeatureChoice, feature_choices, layer_of, stored_specs
from budget.folds import assign_folds, classes_missing, fold_names, read_fold_file
from budget.grid import PAIR, FeaturePair, Job, build_jobs
from budget.labels import class_order
from budget.progress import duration
from budget.provenance import study_provenance
from budget.registry import describe_training, head_spec
from budget.registry import train as train_head
from budget.results import RESULT_KEY, sort_results
from budget.runfolder import CONVERGENCE, RESULTS, RunFolder, budget_table
from budget.sampling import SizePlan, per_class_sizes, plan_sizes
from budget.study.config import StudyConfig
from budget.study.memory import MemoryPlan, available_bytes, feature_memory, plan_memory, plan_training


@dataclass
class StudyData:
    """A study's corpus after scanning: manifest with folds, classes, size plan."""

    manifest: pd.DataFrame
    classes: list[str]
    folds: pd.Series
    fold_names: dict[int, str]
    plan: SizePlan
    problems: pd.DataFrame  # bad audio files, left out
    audio_notes: pd.DataFrame  # usable files worth a look (silent, very short)


def missing_classes_note(missing: dict[int, list[str]], names: dict[int, str]) -> str:
    """One sentence on held-out folds that lack a class, and what that does to their metrics."""
    listed = ", ".join(f"{names[fold]} (no {'/'.join(classes)})" for fold, classes in missing.items())
    return (f"held-out folds without every class: {listed}; a fold's UA and macro-F1 average over the classes it "
            "holds, and a class's recall over the folds that hold it")


#: Files a study's log names of each kind; `budget corpus info` lists every one.
LISTED_FILES = 10


def scan_corpus(config: StudyConfig, log=print, strict: bool = False, listed: int | None = LISTED_FILES) -> AudioScan:
    """The corpus a study or an extraction reads (fetching EmoDB when missing), every file checked in the part the
    crop keeps: bad files are left out and files worth a look noted (``listed`` of each named in the ``log``; None:
    all), or with ``strict`` either stops the work."""
    scan = usable_audio(load_fetching(config.corpus, config.root, config.classes, log), strict,
                        max_seconds=config.entry_settings().max_seconds)  # fmt: skip
    if not scan.problems.empty:
        log(f"{len(scan.problems)} bad audio file(s), left out:" + _listed(scan.problems["path"], scan.problems["reason"], listed))
    if not scan.notes.empty:
        log(f"{len(scan.notes)} file(s) worth a look, kept ({notes_summary(scan.notes)}; --strict refuses them):"
            + _listed(scan.notes["path"], scan.notes["note"], listed))  # fmt: skip
    return scan


def _listed(paths: pd.Series, reasons: pd.Series, listed: int | None) -> str:
    """A line per file, ``listed`` of them at most."""
    shown = list(zip(paths, reasons, strict=True))[:listed]
    more = len(paths) - len(shown)
    return "".join(f"\n  {path}: {reason}" for path, reason in shown) + (
        f"\n  and {more} more (`budget corpus info` lists them all)" if more else "")


def prepare(config: StudyConfig, log=print, strict: bool = False) -> StudyData:
    """Load and scan the corpus (:func:`scan_corpus`), assign folds, check the sizes against every fold."""
    scan = scan_corpus(config, log, strict)
    usable = scan.usable
    folds = read_fold_file(config.fold_file, usable, log) if config.fold_file else assign_folds(usable, config.n_folds)
    classes = class_order(usable["label"])
    if len(classes) < 2:
        raise BudgetError(f"a study needs at least two classes; the corpus{' with --classes' if config.classes else ''} "
                          f"holds {len(classes)} ({', '.join(classes)})")  # fmt: skip
    plan = plan_sizes(per_class_sizes(config.per_class, config.n, len(classes)), usable, folds)
    if not plan.sizes:
        raise BudgetError("no requested size can be supplied by every fold: " + "; ".join(plan.skipped))
    return StudyData(usable, classes, folds, fold_names(usable, folds), plan, scan.problems, scan.notes)


def configured_extractors(config: StudyConfig) -> dict[str, FeatureExtractor]:
    """The extractors of a study's feature sets by stored spec (``hf:M:weighted`` is read from ``hf:M:all``), on its
    device and in its precision."""
    return {spec: parse_feature_spec(spec).configure(config.train.device, config.precision)
            for spec in stored_specs(config.features)}  # fmt: skip


def extract(config: StudyConfig, extractors: dict[str, FeatureExtractor], manifest: pd.DataFrame) -> list[ExtractionReport]:
    """Extract what the store lacks of ``manifest`` for ``extractors``, under the study's entry settings, batch size
    and executor: what ``budget extract`` and a study's own extraction both do."""
    config.executor.require()
    return FeatureStore(config.store).extract_all(list(extractors.values()), manifest, config.entry_settings(),
                                                  batch_size=config.extract_batch, executor=config.executor)  # fmt: skip


def extract_features(config: StudyConfig, log=print, strict: bool = False) -> list[ExtractionReport]:
    """``budget extract``: scan the corpus and extract every feature set of ``config`` the store lacks."""
    extractors = configured_extractors(config)
    return extract(config, extractors, scan_corpus(config, log, strict).usable)


def default_run_dir(command: str, config: StudyConfig) -> Path:
    """``runs/<command>-<corpus>-<digest>``: the same study resumes in the same folder."""
    return Path("runs") / f"{command}-{get_adapter(config.corpus).name}-{config.digest()}"


class Study:
    """One study in its run folder.

    ``trainer`` trains a list of runs of one head (:func:`budget.registry.train`'s
    protocol: head, inputs by part, labels, runs, classes, config); tests hand in their own.
    """

    def __init__(self, config: StudyConfig, run_dir: str | Path, trainer: Trainer = train_head):
        if config.heads is None:
            raise BudgetError("name the heads a study trains (StudyConfig.for_command gives a command's own)")
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.trainer = trainer
        train = replace(config.train, device=resolve_device(config.train.device))
        started = self.folder.recorded_train().get("bf16") if train.bf16 is None else None
        self.kept_products = isinstance(started, bool) and started != with_products(train).bf16
        train = replace(train, bf16=started) if isinstance(started, bool) else with_products(train)
        self.config = replace(config, train=train)

    def finished(self) -> pd.DataFrame:
        """Every run finished so far."""
        return self.folder.finished()

    def run(self, log=print, strict: bool = False, check_convergence: str = "none") -> pd.DataFrame:
        """Run what is not finished yet; write and return the full results table.

        ``strict``: see :func:`prepare`.  ``check_convergence``: ``none``,
        ``ends`` (the smallest and largest balanced size of each curve, and ``full``) or
        ``all``: retrain those cells with twice the budget into
        ``convergence.parquet`` (see :func:`budget.analysis.convergence_table`).
        """
        self.config.executor.require()
        with cluster(self.config.executor):  # one Ray cluster for the extraction and every table
            return self.run_inputs(self.load_inputs(log, strict), log, check_convergence)

    def load_inputs(self, log=print, strict: bool = False) -> StudyInputs:
        """Scan the corpus, extract what the store lacks and load every feature set: what training needs."""
        config = self.config
        extractors = configured_extractors(config)
        choices = feature_choices(config.features, config.layers, extractors)
        pairs = self._pairs(choices, extractors)
        data = prepare(config, log, strict)
        self.announce_sizes(data, log)
        if missing := classes_missing(data.manifest, data.folds, data.classes):
            log(missing_classes_note(missing, data.fold_names))
        entries, loaded, memory = self._load_features(extractors, choices, data, log)
        return StudyInputs(data, loaded, entries, pairs, layer_sweeps(choices, extractors), memory)

    def announce_sizes(self, data: StudyData, log) -> None:
        """Say how the sizes were chosen, and which requested ones no fold can supply."""
        for note in [data.plan.note, *(f"skipped {s}" for s in data.plan.skipped)]:
            if note:
                log(note)

    def run_inputs(self, inputs: StudyInputs, log=print, check_convergence: str = "none") -> pd.DataFrame:
        """Train and write results from loaded inputs (on this machine, or one with neither corpus nor store)."""
        config, data = self.config, inputs.data
        order = {"features": [*inputs.features, *(pair.name for pair in inputs.pairs)], "head": list(config.heads)}
        memory = self.memory_plan(inputs, log)
        train = replace(config.train, eval_mb=memory.eval_mb)
        executor = make_executor(config.executor, self.folder, self.trainer, data.classes, data.fold_names, log,
                                 memory.workers)  # fmt: skip
        with self.folder.writing():
            self.folder.claim(config.digest(), config.to_dict())
            log(f"study folder: {self.run_dir} (running it again resumes)")
            if self.kept_products:
                log(f"this study started with {products_phrase(config.train)} products and keeps them, although this "
                    "device would choose otherwise (bf16 = true or false in its config decides)")  # fmt: skip
            labels = data.manifest["label"].map({c: i for i, c in enumerate(data.classes)}).to_numpy()
            reads = {head: head_spec(head).inputs for head in config.heads}
            jobs = build_jobs(reads, inputs.features, inputs.pairs, data.manifest, data.folds, labels,
                              data.plan.sizes, config.seeds)  # fmt: skip
            if unmixed := [job for job in jobs if job.single and job.single.stacked > 1 and not head_spec(job.head).mixes_layers]:
                log("layer weights are learned by " + ", ".join(h for h in config.heads if head_spec(h).mixes_layers)
                    + "; not trained on stacked layers: " + ", ".join(f"{job.head} on {job.name}" for job in unmixed))
                jobs = [job for job in jobs if job not in unmixed]
            log(f"training: {describe_training(config.train, config.heads)}")
            self._train(jobs, executor, train, check_convergence, log)
            self.folder.write_provenance(study_provenance(
                config, data.manifest, data.classes, data.fold_names, data.plan.sizes, data.plan.skipped,
                len(data.problems), inputs.entries, inputs.pairs, inputs.layer_sweeps))  # fmt: skip
            return self._compose(order)

    def _train(self, jobs: list[Job], executor, train: TrainConfig, check: str, log) -> None:
        """The first pass and, with a check, the convergence check: the checked cells at twice the budget, then each
        cell still learning at twice that again, up to :data:`budget.analysis.BUDGETS`' cap.  A stepped head's run
        at a higher budget trains on from its run below (:meth:`TrainConfig.scaled`), whose weights the executor
        keeps until then."""
        checked = [job.doubled(check) for job in jobs if head_spec(job.head).budgeted] if check != "none" else []
        checked = [job for job in checked if job.runs]
        works = [executor.plan(jobs, RESULTS, train, keep=_going_on(checked, train))]
        if checked:
            which = "every size" if check == "all" else "the smallest and largest size and full"
            log(f"convergence check: {which} of each curve trained on to twice the budget; a cell still learning then "
                f"trains on to twice that, up to {BUDGETS[-1]}x")  # fmt: skip
            works.append(executor.plan(checked, budget_table(2), train.scaled(2), keep=_going_on(checked, train),
                                       after=works))  # fmt: skip
        estimate = executor.announce(works, ", the first pass and the convergence check" if checked else "")
        seconds = executor.execute(works)
        budget = 2
        while checked and budget < BUDGETS[-1]:
            steps = convergence_table(pd.DataFrame(), self._trained())
            moving = steps[(steps["budget"] == budget // 2) & steps["flagged"]]
            if moving.empty:
                break
            cells = set(moving[["features", "head", "size"]].itertuples(index=False, name=None))
            again = [replace(job, runs=[r for r in job.runs if (job.name, job.head, r.size) in cells]) for job in checked]
            again = [job for job in again if job.runs]
            budget *= 2
            log(f"convergence check: {len(cells)} cell(s) moved by doubling {budget // 4}x the budget to {budget // 2}x; "
                f"they train on to {budget}x")  # fmt: skip
            work = executor.plan(again, budget_table(budget), train.scaled(budget), keep=_going_on(again, train))
            estimate += executor.announce([work], f" at {budget}x the budget")
            seconds += executor.execute([work])
        executor.checkpoints.clear()
        if seconds:
            log(f"training took {duration(seconds)}{executor.estimate_scope}; estimated {duration(estimate)}")

    def _trained(self) -> pd.DataFrame:
        """Every finished run at every budget, with its ``budget``."""
        tables = [table.assign(budget=budget) for budget in BUDGETS if len(table := self.folder.finished(budget_table(budget)))]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[*RESULT_KEY, "budget"])

    def _compose(self, order: dict[str, list[str]]) -> pd.DataFrame:
        """Write the results (every cell at the budget it needed, by :func:`budget.analysis.cell_budgets`) and the
        convergence table (the retrained cells' runs at every budget); return the results."""
        trained = self._trained()
        first = trained[trained["budget"] == 1]
        steps = convergence_table(pd.DataFrame(), trained)
        chosen = cell_budgets(steps)
        results = first
        if len(chosen):
            key = ["features", "head", "size"]
            moved = chosen[chosen["budget"] > 1]
            stays = ~first.set_index(key).index.isin(moved.set_index(key).index)
            better = trained.merge(moved[[*key, "budget"]], on=[*key, "budget"])
            results = pd.concat([first[stays], better], ignore_index=True)
            ladder = trained.merge(chosen[key], on=key)
            self.folder.write_table(sort_results(ladder, order).sort_values("budget", kind="stable"), CONVERGENCE)
        results = sort_results(results, order)
        self.folder.write_table(results, RESULTS)
        return results

    def _table(self, name: str, order: dict[str, list[str]]) -> pd.DataFrame:
        """The finished runs of ``results`` or ``convergence`` in the configured order, written as one table."""
        table = sort_results(self.folder.finished(name), order)
        self.folder.write_table(table, name)
        return table

    def _pairs(self, choices: list[FeatureChoice], extractors) -> list[FeaturePair]:
        """Audio + text feature-set pairs for bimodal heads (one layer each); an error, before any work, when a
        modality is missing."""
        audio = [c.name for c in choices if extractors[c.stored].modality == "audio" and not c.weighted]
        text = [c.name for c in choices if extractors[c.stored].modality == "text"]
        pairs = [FeaturePair(a, t) for a in audio for t in text]
        bimodal = [h for h in self.config.heads if head_spec(h).inputs == PAIR]
        if bimodal and not pairs:
            raise BudgetError(f"{bimodal[0]} needs an audio and a text feature set, e.g. --features hf:MODEL,text:MODEL")
        return pairs

    def _load_features(self, extractors: dict[str, FeatureExtractor], choices: list[FeatureChoice], data: StudyData,
                       log) -> tuple[dict[str, str], dict[str, FeatureSet], MemoryPlan]:  # fmt: skip
        """Extract what the store lacks, then load every feature set; return store entries and feature sets, by
        feature-set name, and how training fits in memory beside them."""
        store = FeatureStore(self.config.store)
        reports = extract(self.config, extractors, data.manifest)
        for extractor, report in zip(extractors.values(), reports, strict=True):
            if report.extracted:
                log(f"extracted {extractor.spec} for {report.extracted} utterances ({report.seconds:.0f} s)")
        report_of = dict(zip(extractors, reports, strict=True))
        entries = {choice.name: report_of[choice.stored].entry.name for choice in choices}
        memory = plan_memory([feature_memory(choice.name, store.footprint(extractors[choice.stored], data.manifest,
                                                                          self.config.entry_settings(), layer=choice.layer),
                                             heads_on(choice, self.config.heads), self.config.train)
                              for choice in choices], list(self.config.heads), self.config.train, self.config.max_memory,
                             self.training_workers, log,
                             in_store=self.config.shared_store and not self.config.executor.local)  # fmt: skip
        loaded = {}
        for choice in choices:
            features = store.load(extractors[choice.stored], data.manifest, self.config.entry_settings(),
                                  layer=choice.layer, frames=frames_read(choice, self.config.heads),
                                  mapped=choice.name in memory.mapped)  # fmt: skip
            if choice.weighted:
                features = stacked_layers(features)
            if features.missing:
                log(f"{choice.name}: {len(features.missing)} utterance(s) have no features and are left out")
            loaded[choice.name] = replace(features, spec=choice.name)
        return entries, loaded, memory

    @property
    def training_workers(self) -> int | None:
        """The worker processes asked for (None: as many as fit); one where a Ray cluster trains (each task is one
        process)."""
        return self.config.workers if self.config.executor.local else 1

    def memory_plan(self, inputs: StudyInputs, log) -> MemoryPlan:
        """How training fits beside the features: as planned when they were loaded, else (inputs loaded elsewhere)
        within the memory available now."""
        if inputs.memory is not None:
            return inputs.memory
        return plan_training(list(self.config.heads), self.config.train, available_bytes(), self.training_workers,
                             log=log)  # fmt: skip


def _going_on(jobs: list[Job], train: TrainConfig) -> set[tuple]:
    """The runs of ``jobs`` whose higher budgets train on from them: their checkpoints are kept."""
    return {run.key(job) for job in jobs if head_spec(job.head).goes_on(train) for run in job.runs}


def heads_on(choice: FeatureChoice, heads: tuple[str, ...]) -> list[str]:
    """The heads that train on ``choice``: on stacked layers, only those that learn layer weights."""
    return [head for head in heads if head_spec(head).mixes_layers or not choice.weighted]


def frames_read(choice: FeatureChoice, heads: tuple[str, ...]) -> bool:
    """Whether a head that trains on ``choice`` reads its frames; if none does, a study loads its statistics alone."""
    return any(head_spec(head).reads_frames for head in heads_on(choice, heads))


def stacked_layers(features: FeatureSet) -> FeatureSet:
    """An ``:all`` entry's frames ``(frames, layers, width)`` as stacked inputs ``(frames, layers * width)``, for a
    head that learns the layers' weights."""
    n, n_layers, width = features.mean.shape
    frames = None if features.frames is None else features.frames.reshape(len(features.frames), n_layers * width)
    return replace(features, frames=frames,
                   mean=features.mean.reshape(n, n_layers * width), max=features.max.reshape(n, n_layers * width),
                   stacked=n_layers)  # fmt: skip


def layer_sweeps(choices: list[FeatureChoice], extractors: dict[str, FeatureExtractor]) -> dict[str, dict]:
    """Per ``:all`` entry a study reads: its layers' feature sets, the one its encoder reads by default, and
    the weighted sum's, for the report's layer comparison."""
    sweeps: dict[str, dict] = {}
    for choice in (c for c in choices if c.from_all):
        model, _ = layer_of(choice.stored)
        sweep = sweeps.setdefault(choice.stored, {"layers": {}, "default": f"{model}:{extractors[choice.stored].default_layer}",
                                                  "weighted": None})  # fmt: skip
        if choice.weighted:
            sweep["weighted"] = choice.name
        else:
            sweep["layers"][choice.name] = choice.layer
    return sweeps


@dataclass
class StudyInputs:
    """A study's corpus and loaded features: everything training needs, and picklable."""

    data: StudyData
    features: dict[str, FeatureSet]
    entries: dict[str, str]  # feature set -> store entry
    pairs: list[FeaturePair]  # audio + text feature sets for bimodal heads
    layer_sweeps: dict[str, dict] = field(default_factory=dict)  # see layer_sweeps()
    memory: MemoryPlan | None = None  # how training fits beside the features (None: loaded elsewhere)



