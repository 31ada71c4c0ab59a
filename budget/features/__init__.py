"""Feature extractors and the on-disk feature store.

Specs name extractors on the command line and in the Python API:

``lld``
    34 pyAudioAnalysis low-level descriptors per 50 ms frame;
``hf:<hub id or folder>[:layer|all|weighted]``
    a transformers speech encoder (wav2vec 2.0, HuBERT, WavLM,
    data2vec-audio, Whisper's encoder); ``all`` stores every layer, from
    which a study reads ``--layers`` or the learned ``weighted`` sum
    (:mod:`budget.features.layers`);
``wav2vec1:<checkpoint.pt>``
    a fairseq wav2vec 1.0 checkpoint's context features;
``text:<hub id or folder>[:layer]``
    BERT-family word-piece embeddings of the transcript (second-to-last layer).

A path may itself contain ``:`` only when no layer follows it.
"""

from __future__ import annotations

from pathlib import Path

from budget.errors import BudgetError
from budget.features.base import FeatureExtractor
from budget.features.featureset import FeatureSet
from budget.features.layers import layer_of
from budget.features.store import ExtractionReport, FeatureStore

__all__ = [
    "ExtractionReport",
    "FeatureExtractor",
    "FeatureSet",
    "FeatureStore",
    "display_name",
    "parse_feature_spec",
    "parse_feature_specs",
]

KINDS = ("lld", "hf", "wav2vec1", "text")


def _split_layer(target: str) -> tuple[str, str | None]:
    """``path:8`` -> (path, "8"); a trailing part is a layer only if it looks like one."""
    head, sep, tail = target.rpartition(":")
    if sep and (tail in ("all", "weighted") or tail.lstrip("-").isdigit()) and not Path(target).exists():
        return head, tail
    return target, None


def parse_feature_spec(spec: str) -> FeatureExtractor:
    """The extractor a spec names (see the module doc)."""
    text = spec.strip()
    kind, _, target = text.partition(":")
    kind = kind.lower()
    if kind == "lld" and not target:
        from budget.features.lld import LLDExtractor

        return LLDExtractor(text)
    if kind not in KINDS or not target:
        raise BudgetError(
            f"bad feature spec {spec!r}; use lld, hf:<model>[:layer|all], wav2vec1:<checkpoint.pt> or text:<model>[:layer]"
        )
    if kind == "wav2vec1":
        from budget.features.wav2vec1 import Wav2Vec1Extractor

        return Wav2Vec1Extractor(text, target)
    model, layer = _split_layer(target)
    if layer == "weighted":
        raise BudgetError(f"{spec} is read from {kind}:{model}:all, which stores every layer: extract that one")
    if kind == "hf":
        from budget.features.hf import HFSpeechExtractor

        return HFSpeechExtractor(text, model, layer)
    from budget.features.text import TextExtractor

    if layer == "all":
        raise BudgetError(f"{spec}: text features take one layer, not 'all'")
    return TextExtractor(text, model, layer)


def display_name(spec: str) -> str:
    """A spec for tables and legends: folders shortened to their last part (``hf:../m/whisper-tiny-en`` -> ``whisper-tiny-en``)."""
    kind, _, target = spec.partition(":")
    if not target or "/" not in target:
        return spec
    model, layer = layer_of(target)
    path = Path(model)
    name = path.parent.name if path.name.lower() in ("model", "models") else path.name  # packaged models sit in model/
    prefix = "" if kind == "hf" else f"{kind}:"
    return f"{prefix}{name}" + (f":{layer}" if layer is not None else "")


def parse_feature_specs(specs: str) -> list[FeatureExtractor]:
    """A comma-separated list of specs."""
    names = [s for s in (part.strip() for part in specs.split(",")) if s]
    if not names:
        raise BudgetError("no feature spec given")
    return [parse_feature_spec(name) for name in names]
