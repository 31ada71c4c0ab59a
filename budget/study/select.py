"""Choosing clips for real: rank an unlabelled pool for annotators with a head trained on the labelled corpus.

The labelled set is a corpus as studies read it (``corpus``, ``root``,
``classes``); the pool is a folder of audio (every file soundfile reads, found
recursively) or a CSV with a ``path`` column.  Pool clips whose audio is
already labelled (the same bytes) are left out with one line; both sets'
features are extracted into the store as usual.  The head is trained on every
labelled clip, its probabilities on the pool handed to the strategy, and the
``n`` clips it chooses come back ranked, best first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from budget.audio import usable_audio
from budget.errors import BudgetError, check_number
from budget.features import FeatureStore
from budget.grid import Run
from budget.labels import class_order
from budget.registry import head_spec
from budget.registry import train as train_head
from budget.results import RunOutput
from budget.sampling import FULL
from budget.strategies import Pool, strategy
from budget.study.config import StudyConfig
from budget.study.run import configured_extractors, extract, scan_corpus

#: What a pool folder's audio files may end with (what soundfile reads).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
#: The seed of a strategy's draws when it ranks a real pool: the same pool and labels give the same list.
SELECT_SEED = 0


def pool_manifest(pool: Path) -> pd.DataFrame:
    """The clips of an unlabelled pool: every audio file below a folder, or the ``path`` column of a CSV (relative
    paths read from the CSV's folder); ids are ``pool:`` and the path."""
    if pool.is_dir():
        paths = sorted(p for p in pool.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not paths:
            raise BudgetError(f"the pool {pool} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
    elif pool.is_file():
        try:
            table = pd.read_csv(pool, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise BudgetError(f"cannot read the pool {pool}: {error}") from None
        if "path" not in table.columns:
            raise BudgetError(f"the pool CSV {pool} needs a 'path' column; has {', '.join(table.columns) or 'none'}")
        paths = [(pool.parent / p).resolve() if not Path(p).is_absolute() else Path(p) for p in table["path"] if p]
        if not paths:
            raise BudgetError(f"the pool CSV {pool} lists no clip")
    else:
        raise BudgetError(f"the pool {pool} does not exist: give a folder of audio or a CSV with a path column")
    return pd.DataFrame({"utt_id": [f"pool:{p}" for p in paths], "path": [str(p) for p in paths], "label": "",
                         "speaker": "", "group": "pool", "text": ""})  # fmt: skip


def select_clips(config: StudyConfig, pool: Path, n: int, strategy_name: str, log=print, strict: bool = False
                 ) -> pd.DataFrame:  # fmt: skip
    """The ``n`` pool clips ``strategy_name`` would send to annotators next: rank, path, the strategy's score, the
    head's predicted class and its probability."""
    check_number("n", n, integer=True, minimum=1)
    chooser = strategy(strategy_name)
    if chooser.oracle:
        raise BudgetError(f"{strategy_name} chooses clips by their labels, which an unlabelled pool does not have: "
                          "choose another strategy (budget acquire compares them on a labelled corpus)")  # fmt: skip
    if len(config.features) != 1 or len(config.heads) != 1:
        raise BudgetError("select ranks a pool with one head on one feature set: name one with -f and one with -m")
    labelled = scan_corpus(config, log, strict).usable
    pool_scan = usable_audio(pool_manifest(pool), strict, max_seconds=config.entry_settings().max_seconds)
    if not pool_scan.problems.empty:
        log(f"{len(pool_scan.problems)} pool file(s) cannot be used and are left out: "
            + "; ".join(f"{row.path}: {row.reason}" for row in pool_scan.problems.head(10).itertuples()))  # fmt: skip
    extractors = configured_extractors(config)
    (extractor,) = extractors.values()
    settings = config.entry_settings()
    known = set(settings.utterance_keys(extractor, labelled))
    unlabelled = pool_scan.usable[[key not in known for key in settings.utterance_keys(extractor, pool_scan.usable)]]
    if len(unlabelled) < len(pool_scan.usable):
        log(f"{len(pool_scan.usable) - len(unlabelled)} pool clip(s) are labelled already (the same audio) and are left out")
    if unlabelled.empty:
        raise BudgetError(f"the pool {pool} holds no clip that is not labelled already")
    if len(unlabelled) < n:
        raise BudgetError(f"asked for {n} clips; the pool holds {len(unlabelled)} that are not labelled")
    both = pd.concat([labelled, unlabelled], ignore_index=True)
    extract(config, extractors, both)
    features = FeatureStore(config.store).load(extractor, both, settings, frames=head_spec(config.heads[0]).reads_frames)
    position = {u: i for i, u in enumerate(features.utt_ids)}
    train = np.array([position[u] for u in labelled["utt_id"] if u in position])
    test = np.array([position[u] for u in unlabelled["utt_id"] if u in position])
    classes = class_order(labelled["label"])
    labels = np.zeros(len(features), np.int64)
    labels[train] = labelled.set_index("utt_id").loc[features.utt_ids[train], "label"].map(classes.index).to_numpy()
    log(f"training {config.heads[0]} on {len(train)} labelled clips; ranking {len(test)} pool clips by {strategy_name}")
    (output,) = train_head(config.heads[0], {"single": features}, labels, [Run(0, SELECT_SEED, FULL, train, test)],
                           len(classes), config.train, probabilities=True)  # fmt: skip
    probabilities = RunOutput.of(output).probabilities
    embeddings = features.mean[np.concatenate([train, test])]
    known_rows = np.full((len(train), len(classes)), np.nan)
    choice = chooser.choose(Pool(embeddings, np.arange(len(embeddings)) < len(train),
                                 np.concatenate([known_rows, probabilities])), n, np.random.default_rng(SELECT_SEED))  # fmt: skip
    chosen = choice.clips - len(train)
    return pd.DataFrame({
        "rank": np.arange(1, n + 1), "path": [features.utt_ids[test[i]].removeprefix("pool:") for i in chosen],
        "strategy": strategy_name, "score": choice.scores,
        "predicted": [classes[int(np.argmax(probabilities[i]))] for i in chosen],
        "probability": [float(np.max(probabilities[i])) for i in chosen],
    })  # fmt: skip
