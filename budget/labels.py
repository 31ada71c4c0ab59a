"""One emotion vocabulary across corpora, and class selection.

Every corpus adapter maps its own codes (EmoDB's ``F``, IEMOCAP's ``hap``,
RAVDESS's ``03``) to the canonical names in :data:`EMOTIONS`, so a curve on one
corpus reads like a curve on another.  A *class spec* then chooses which
emotions a study uses and which ones it merges:

``"neutral,happy,sad,angry"``
    keep these four, drop every other label;
``"neutral,happy+excited,sad,angry"``
    the same, with ``excited`` relabelled ``happy`` (the first name of a
    ``+`` group is the class it becomes);
``"iemocap4"``
    a named preset (see :data:`PRESETS`);
``"all"``
    every label the corpus has.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import pandas as pd

from budget.errors import BudgetError

#: Canonical emotion names.
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "calm",
    "boredom",
    "excited",
    "frustrated",
    "contempt",
    "other",
    "no_agreement",
)

#: How alike (difflib's ratio) an unknown label and a known name must be for the label to read as a typo.
TYPO_SIMILARITY = 0.85  # "hapy" and "nuetral" are typos; "content" (0.8 from "contempt") is an emotion of its own

#: Named class specs.
PRESETS: dict[str, str] = {
    # Boigne et al. 2020 and most IEMOCAP work: excitement merged into happiness.
    "iemocap4": "neutral,happy+excited,sad,angry",
    "basic4": "neutral,happy,sad,angry",
}

# Spellings met in corpora and user CSVs, mapped to canonical names.
_ALIASES: dict[str, str] = {
    "neu": "neutral",
    "hap": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "ang": "angry",
    "anger": "angry",
    "fea": "fearful",
    "fear": "fearful",
    "anxiety": "fearful",
    "dis": "disgust",
    "disgusted": "disgust",
    "sur": "surprised",
    "surprise": "surprised",
    "bored": "boredom",
    "exc": "excited",
    "excitement": "excited",
    "fru": "frustrated",
    "frustration": "frustrated",
    "oth": "other",
    "xxx": "no_agreement",
}


def canonical_label(name: str) -> str:
    """Return the canonical spelling of an emotion name.

    Known aliases (``hap``, ``anger``, ``joy``...) map to :data:`EMOTIONS`;
    any other name is returned stripped and lower-cased, so a custom corpus
    can bring its own classes.
    """
    key = str(name).strip().lower()
    if not key:
        raise BudgetError("empty emotion label")
    return _ALIASES.get(key, key)


def check_spelling(labels: pd.Series, source: str) -> None:
    """Refuse a label that is not a known emotion but nearly spells one: a typo would become a class of its own.

    Custom classes stay welcome where they are not a letter or two from a known name.
    """
    known = [*EMOTIONS, *_ALIASES]
    for label, count in labels.value_counts().items():
        if label in known:
            continue
        near = difflib.get_close_matches(label, known, n=1, cutoff=TYPO_SIMILARITY)
        if near:
            meant = canonical_label(near[0])
            raise BudgetError(
                f"{source}: label {label!r} ({count} utterance(s)) looks like a misspelling of {meant!r}; "
                f"correct it, or it would train as a class of its own"
            )


@dataclass(frozen=True)
class ClassSpec:
    """Which source labels a study keeps, and the class each one becomes."""

    mapping: dict[str, str]  # canonical source label -> class name

    @property
    def classes(self) -> list[str]:
        """Class names in the order the spec gives them."""
        return list(dict.fromkeys(self.mapping.values()))

    @classmethod
    def parse(cls, spec: str) -> ClassSpec | None:
        """Parse a class spec; ``"all"`` gives ``None`` (keep everything)."""
        text = spec.strip()
        if text.lower() == "all":
            return None
        text = PRESETS.get(text.lower(), text)
        mapping: dict[str, str] = {}
        for group in text.split(","):
            names = [canonical_label(n) for n in group.split("+") if n.strip()]
            if not names:
                raise BudgetError(f"bad class spec {spec!r}: an empty class between commas")
            for name in names:
                if name in mapping:
                    raise BudgetError(f"bad class spec {spec!r}: {name!r} is named twice")
                mapping[name] = names[0]
        return cls(mapping)

    def __str__(self) -> str:
        groups: dict[str, list[str]] = {}
        for source, target in self.mapping.items():
            groups.setdefault(target, []).append(source)
        return ",".join("+".join(g) for g in groups.values())


def class_order(labels) -> list[str]:
    """Distinct labels in the canonical order (neutral, happy, sad, angry...), unknown ones last."""
    rank = {name: i for i, name in enumerate(EMOTIONS)}
    return sorted(set(labels), key=lambda name: (rank.get(name, len(rank)), name))


def select_classes(manifest: pd.DataFrame, spec: str | ClassSpec | None) -> pd.DataFrame:
    """Keep the utterances whose label the spec names, relabelled to its classes.

    The corpus's own code stays in ``source_label``.  A class that matches no
    utterance is an error, since a study on it could never be balanced.
    """
    if isinstance(spec, str):
        spec = ClassSpec.parse(spec)
    if spec is None:
        return manifest.reset_index(drop=True)
    present = set(manifest["label"])
    missing = [name for name in spec.mapping if name not in present]
    empty_classes = [c for c in spec.classes if all(s in missing for s, t in spec.mapping.items() if t == c)]
    if empty_classes:
        have = ", ".join(sorted(present)) or "none"
        raise BudgetError(
            f"class(es) {', '.join(empty_classes)} have no utterances in this corpus (labels here: {have})"
        )
    kept = manifest[manifest["label"].isin(spec.mapping)].copy()
    kept["label"] = kept["label"].map(spec.mapping)
    return kept.reset_index(drop=True)
