"""Text token embeddings from a BERT-family encoder: ``text:<hub id or folder>[:layer]``.

As in Boigne et al. 2020, the features of a transcript are its word-piece
embeddings from the second-to-last layer (layer ``-2``, the default), one
vector per word piece; the ``[CLS]``/``[SEP]`` special tokens are left out.
An empty transcript gives zero frames.  Transcripts longer than the model's
maximum length are truncated.
"""

from __future__ import annotations

import os

import numpy as np

from budget.errors import BudgetError, ModelLoadError
from budget.features.base import FeatureExtractor, torch_dtype, weights_digest
from budget.features.hf import FAMILIES as SPEECH_FAMILIES
from budget.features.hf import resolve_model_folder


class TextExtractor(FeatureExtractor):
    """``text:<model>[:layer]``: word-piece embeddings of the manifest's ``text``."""

    modality = "text"

    def __init__(self, spec: str, model: str, layer: int | str | None = None):
        super().__init__(spec)
        from transformers import AutoConfig

        self.model_name = model
        self.folder = resolve_model_folder(model)
        try:
            config = AutoConfig.from_pretrained(self.folder)
        except (OSError, ValueError) as error:
            raise BudgetError(f"{self.folder} is not a transformers model folder: {error}") from error
        if config.model_type in SPEECH_FAMILIES:
            raise BudgetError(f"{model} is a speech encoder ({config.model_type}); use hf:{model} for it, text: is for BERT-family models")
        self.n_layers = config.num_hidden_layers
        try:
            self.layer = -2 if layer is None else int(layer)
        except ValueError:
            raise BudgetError(f"{spec}: layer must be an index; got {layer!r}") from None
        if not -(self.n_layers + 1) <= self.layer <= self.n_layers:
            raise BudgetError(f"{spec}: layer {self.layer} out of range for {self.n_layers} layers")
        self._model = None
        self._tokenizer = None

    def identity(self) -> dict[str, object]:
        files = [p for p in self.folder.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".txt")]
        return {
            "kind": "text",
            "model": self.folder.name,
            "files_sha256": weights_digest(files),
            "layer": self.layer,
            "precision": self.precision,
            "version": self.version,
        }

    loaded_attributes = ("_model", "_tokenizer")

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # budget draws its own bar
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.folder)
            model = AutoModel.from_pretrained(self.folder, dtype=torch_dtype(self.precision))
        except Exception as error:  # truncated or missing weights or vocabulary: many types
            raise ModelLoadError(f"{self.folder}: cannot load the text model ({type(error).__name__}: {error})") from error
        self._model = model.to(self.device).eval()

    def _extract(self, inputs: list[str]) -> list[np.ndarray]:
        import torch

        self.load()
        batch = self._tokenizer(
            [str(text) for text in inputs],
            padding=True,
            truncation=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        keep = (batch.pop("special_tokens_mask") == 0) & (batch["attention_mask"] == 1)
        with torch.inference_mode():
            hidden = self._model(**batch.to(self.device), output_hidden_states=True).hidden_states[self.layer]
        hidden = hidden.float().cpu().numpy()
        keep = keep.numpy()
        return [np.ascontiguousarray(hidden[i][keep[i]]) for i in range(len(inputs))]
