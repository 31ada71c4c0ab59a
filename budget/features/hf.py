"""Pretrained speech encoders through transformers: ``hf:<hub id or folder>[:layer]``.

Families: wav2vec 2.0, HuBERT, WavLM, data2vec-audio (raw-waveform encoders,
50 frames/s) and the Whisper encoder (log-mel input padded to 30 s; only the
frames that belong to the clip are kept).

Layers are indexed as transformers' ``hidden_states``: 0 is the input to
the first transformer layer, ``n`` the output of the last.  The default is a
documented choice per family: for self-supervised encoders, layer
``round(2n/3)`` (8 of 12, 16 of 24), since layer-wise probing of wav2vec 2.0,
HuBERT and WavLM finds paralinguistic information peaking in the upper-middle
layers rather than at the top, which specialises in the pretext task; for
Whisper, the last encoder layer, which the decoder reads.  ``all`` stores
every hidden state so a study can compare layers without extracting again.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from budget.audio import SAMPLE_RATE
from budget.errors import BudgetError, ModelLoadError
from budget.features.base import FeatureExtractor, torch_dtype, weights_digest

SSL_FAMILIES = ("wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio")
FAMILIES = (*SSL_FAMILIES, "whisper")
WHISPER_SAMPLES_PER_FRAME = 320  # 10 ms mel hop, then a stride-2 convolution
WHISPER_MAX_SECONDS = 30.0


def resolve_model_folder(model: str) -> Path:
    """A local folder as is; a hub id through the local hub cache or a download."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or model.startswith((".", "/", "~")):
        raise BudgetError(f"model folder {model} not found")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"])
    except Exception as error:  # the hub client raises many types: offline, missing repo, auth
        raise BudgetError(
            f"cannot get model {model!r} from the hub ({type(error).__name__}); "
            f"download it where there is internet, or name a local folder: hf:/path/to/model"
        ) from error
    return Path(folder)


class HFSpeechExtractor(FeatureExtractor):
    """``hf:<model>[:layer]``: hidden states of a transformers speech encoder."""

    def __init__(self, spec: str, model: str, layer: int | str | None = None):
        super().__init__(spec)
        from transformers import AutoConfig

        self.model_name = model
        self.folder = resolve_model_folder(model)
        try:
            self.config = AutoConfig.from_pretrained(self.folder)
        except (OSError, ValueError) as error:
            raise BudgetError(f"{self.folder} is not a transformers model folder: {error}") from error
        self.family = self.config.model_type
        if self.family not in FAMILIES:
            raise BudgetError(f"{model}: model type {self.family!r} is not a supported speech encoder ({', '.join(FAMILIES)})")
        self.n_layers = self.config.encoder_layers if self.family == "whisper" else self.config.num_hidden_layers
        self.layer = self._check_layer(layer)
        self.frame_rate = SAMPLE_RATE / self._total_stride()
        self._model = None
        self._processor = None

    @property
    def default_layer(self) -> int:
        """The layer a spec without one reads (see the module doc)."""
        return self.n_layers if self.family == "whisper" else round(2 * self.n_layers / 3)

    def _check_layer(self, layer: int | str | None) -> int | str:
        if layer is None:
            return self.default_layer
        if layer == "all":
            return "all"
        try:
            index = int(layer)
        except ValueError:
            raise BudgetError(f"{self.spec}: layer must be an index or 'all'; got {layer!r}") from None
        if not 0 <= index <= self.n_layers:
            raise BudgetError(f"{self.spec}: layer {index} out of range 0..{self.n_layers}")
        return index

    def shared_pass_key(self) -> object | None:
        """Specs of one model that differ only in a single layer share a forward pass (``all`` stores every layer)."""
        return None if self.layer == "all" else ("hf", str(self.folder), self.precision, self.device)

    def sharing_pass(self, group: list[FeatureExtractor]) -> HFSpeechExtractor:
        runner = copy.copy(self)
        runner.layer = tuple(member.layer for member in group)
        return runner

    def _total_stride(self) -> int:
        if self.family == "whisper":
            return WHISPER_SAMPLES_PER_FRAME
        return int(np.prod(self.config.conv_stride))

    @property
    def pads_exactly(self) -> bool:
        # Whisper always pads to 30 s; layer-norm encoders take an attention mask.
        if self.family == "whisper":
            return True
        return getattr(self.config, "feat_extract_norm", "layer") == "layer"

    def _layer_indices(self, n_hidden: int) -> list[int]:
        return list(range(n_hidden)) if self.layer == "all" else list(self.layer)

    def layer_names(self) -> list[str] | None:
        return [f"layer{i}" for i in range(self.n_layers + 1)] if self.layer == "all" else None

    def identity(self) -> dict[str, object]:
        files = [p for p in self.folder.iterdir() if p.suffix in (".json", ".safetensors", ".bin")]
        return {
            "kind": "hf",
            "model": self.model_name if not Path(self.model_name).expanduser().is_dir() else self.folder.name,
            "model_type": self.family,
            "files_sha256": weights_digest(files),
            "layer": self.layer,
            "precision": self.precision,
            "version": self.version,
        }

    def n_frames(self, n_samples: int) -> int:
        """Output frames that belong to a clip of ``n_samples`` samples."""
        if self.family == "whisper":
            return int(round(n_samples / WHISPER_SAMPLES_PER_FRAME))
        length = n_samples
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            length = (length - kernel) // stride + 1
        return max(length, 0)

    loaded_attributes = ("_model", "_processor")

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoFeatureExtractor, AutoModel
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # budget draws its own bar
        try:
            model = AutoModel.from_pretrained(self.folder, dtype=torch_dtype(self.precision))
        except Exception as error:  # truncated or missing weights raise OSError, safetensors' own errors, ValueError
            raise ModelLoadError(f"{self.folder}: cannot load the model's weights ({type(error).__name__}: {error})") from error
        if self.family == "whisper":
            model = model.get_encoder()
        self._model = model.to(self.device).eval()
        if (self.folder / "preprocessor_config.json").is_file():
            self._processor = AutoFeatureExtractor.from_pretrained(self.folder)
        elif self.family == "whisper":
            from transformers import WhisperFeatureExtractor

            self._processor = WhisperFeatureExtractor()
        else:
            from transformers import Wav2Vec2FeatureExtractor

            normalise = self.pads_exactly  # transformers' own default per feature-encoder norm
            self._processor = Wav2Vec2FeatureExtractor(do_normalize=normalise, return_attention_mask=normalise)

    def _extract(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        self.load()
        lengths = [len(wave) for wave in inputs]
        frames = [self.n_frames(n) for n in lengths]
        if min(frames) <= 0:
            raise BudgetError("an input is shorter than the model's receptive field")
        if self.family == "whisper" and max(lengths) > WHISPER_MAX_SECONDS * SAMPLE_RATE:
            raise BudgetError("the Whisper encoder takes at most 30 s; crop the audio (--max-seconds)")
        dtype = torch_dtype(self.precision)
        with torch.inference_mode():
            if self.family == "whisper":
                batch = self._processor(inputs, sampling_rate=SAMPLE_RATE, return_tensors="pt")
                hidden = self._model(
                    batch.input_features.to(self.device, dtype), output_hidden_states=True
                ).hidden_states
            else:
                batch = self._processor(
                    inputs, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True, return_tensors="pt"
                )
                mask = batch.attention_mask.to(self.device) if self.pads_exactly else None
                hidden = self._model(
                    batch.input_values.to(self.device, dtype), attention_mask=mask, output_hidden_states=True
                ).hidden_states
            if self.layer == "all" or isinstance(self.layer, tuple):  # every layer, or those of a shared pass
                stacked = torch.stack([hidden[i] for i in self._layer_indices(len(hidden))], dim=2)
            else:
                stacked = hidden[self.layer]
            stacked = stacked.float().cpu().numpy()
        return [np.ascontiguousarray(stacked[i, :n]) for i, n in enumerate(frames)]
