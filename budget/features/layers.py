"""Which hidden states of an encoder a study reads: one layer, a sweep of layers, or all of them weighed by a head.

An ``hf:<model>:all`` entry stores every hidden state (0, the input to the
first transformer layer, to n, the last's output).  From that one extraction:

* ``--layers 2,4,last`` (or ``all``) makes each named layer a feature set of
  its own, ``hf:<model>:2`` ..., as if each had been extracted alone;
* ``hf:<model>:weighted`` reads every hidden state at once, for a head that
  learns softmax-normalised weights over them with its other weights, run by
  run (the weighted sum of SUPERB's probing protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

from budget.errors import BudgetError
from budget.features.base import FeatureExtractor

ALL, WEIGHTED, LAST = "all", "weighted", "last"


@dataclass(frozen=True)
class FeatureChoice:
    """A feature set a study names, and where the store holds it."""

    name: str  # as in the results: hf:M:4, hf:M:weighted, lld
    stored: str  # the spec whose store entry holds it: hf:M:all for a layer of a sweep or the weighted sum
    layer: int | None = None  # the hidden state picked from an :all entry
    weighted: bool = False  # every hidden state, stacked, for a head that learns their weights

    @property
    def from_all(self) -> bool:
        return self.layer is not None or self.weighted


def layer_of(spec: str) -> tuple[str, str | None]:
    """``hf:M:all`` -> (``hf:M``, ``all``); the trailing part only when it names a layer (index, all or weighted)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and (tail in (ALL, WEIGHTED) or tail.isdigit()):
        return head, tail
    return spec, None


def read_layers(value) -> tuple[int | str, ...] | None:
    """``--layers``: indices, ``last`` or ``all``, comma-separated or as a TOML list; None when not given."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else [value]
    layers = []
    for part in (p.strip() if isinstance(p, str) else p for p in parts):
        if part in (ALL, LAST):
            layers.append(part)
        elif isinstance(part, int) and not isinstance(part, bool) and part >= 0:
            layers.append(part)
        elif isinstance(part, str) and part.isdigit():
            layers.append(int(part))
        elif part != "":
            raise BudgetError(f"layers are indices (0 is the encoder's input), 'last' or 'all'; got {part!r}")
    if not layers:
        raise BudgetError("--layers names no layer; give indices, 'last' or 'all'")
    return tuple(dict.fromkeys(layers))


def feature_choices(specs: tuple[str, ...], layers: tuple[int | str, ...] | None, extractors: dict[str, FeatureExtractor]
                    ) -> list[FeatureChoice]:  # fmt: skip
    """The feature sets a study's specs and ``--layers`` name, in order; ``extractors`` by stored spec give each
    encoder's number of layers.  An ``:all`` spec needs ``--layers``; ``--layers`` needs an ``:all`` spec."""
    choices = []
    for spec in specs:
        model, layer = layer_of(spec)
        if layer == WEIGHTED:
            choices.append(FeatureChoice(spec, f"{model}:{ALL}", weighted=True))
        elif layer == ALL:
            if layers is None:
                raise BudgetError(f"{spec} holds every layer: pick some with --layers (e.g. --layers 2,4,last or "
                                  f"--layers all), or learn weights over them with {model}:{WEIGHTED}")  # fmt: skip
            n_layers = getattr(extractors[spec], "n_layers", None)
            if n_layers is None:
                raise BudgetError(f"{spec}: only hf: encoders store every layer")
            for index in _indices(layers, n_layers, spec):
                choices.append(FeatureChoice(f"{model}:{index}", spec, layer=index))
        else:
            choices.append(FeatureChoice(spec, spec))
    if layers is not None and not any(choice.layer is not None for choice in choices):
        raise BudgetError("--layers picks layers of an encoder stored whole: name one as hf:<model>:all")
    names = [choice.name for choice in choices]
    if len(set(names)) < len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise BudgetError(f"feature set named twice: {', '.join(repeated)} (a layer of a sweep and the same layer alone)")
    return choices


def stored_specs(specs: tuple[str, ...]) -> list[str]:
    """The specs to extract for a study's specs: ``hf:M:weighted`` is read from ``hf:M:all``."""
    stored = []
    for spec in specs:
        model, layer = layer_of(spec)
        stored.append(f"{model}:{ALL}" if layer == WEIGHTED else spec)
    return list(dict.fromkeys(stored))


def _indices(layers: tuple[int | str, ...], n_layers: int, spec: str) -> list[int]:
    indices = []
    for layer in layers:
        if layer == ALL:
            indices += range(n_layers + 1)
        elif layer == LAST:
            indices.append(n_layers)
        elif not 0 <= int(layer) <= n_layers:
            raise BudgetError(f"{spec}: layer {layer} out of range 0..{n_layers}")
        else:
            indices.append(int(layer))
    return list(dict.fromkeys(indices))
