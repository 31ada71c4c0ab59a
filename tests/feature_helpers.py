"""Helpers for feature tests: a cheap deterministic extractor and tiny random speech encoders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from budget.features.base import FeatureExtractor


class CountingExtractor(FeatureExtractor):
    """Frames of 160 samples -> (mean, std, peak) per frame, counting every call.

    ``fail_on_call`` raises KeyboardInterrupt on that call (an interrupted
    run); ``sleep`` slows each call (for kill tests).
    """

    frame_rate = 100.0

    def __init__(self, scale: float = 1.0, fail_on_call: int | None = None, sleep: float = 0.0):
        super().__init__("counting")
        self.scale = scale
        self.fail_on_call = fail_on_call
        self.sleep = sleep
        self.calls = 0
        self.utterances = 0

    def identity(self):
        return {"kind": "counting", "scale": self.scale, "version": self.version}

    def _extract(self, inputs):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        time.sleep(self.sleep)
        self.utterances += len(inputs)
        return [self.frames(wave) for wave in inputs]

    def frames(self, wave: np.ndarray) -> np.ndarray:
        chunks = wave[: len(wave) // 160 * 160].reshape(-1, 160)
        return self.scale * np.stack([chunks.mean(1), chunks.std(1), np.abs(chunks).max(1)], axis=1).astype(np.float32)


def tiny_encoder(family: str, folder: Path, norm: str = "group", with_preprocessor: bool = False) -> Path:
    """Save a tiny randomly initialised wav2vec 2.0 / HuBERT / WavLM model in transformers layout."""
    import torch
    from transformers import (
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WavLMConfig,
        WavLMModel,
    )

    classes = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel), "wavlm": (WavLMConfig, WavLMModel)}
    config_class, model_class = classes[family]
    config = config_class(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=48,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 2),
        conv_kernel=(10, 4, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        vocab_size=12,
    )
    torch.manual_seed(0)
    model_class(config).eval().save_pretrained(folder)
    if with_preprocessor:
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=norm == "layer").save_pretrained(folder)
    return folder
