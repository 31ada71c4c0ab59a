"""Hand-made low-level descriptors (LLDs): pyAudioAnalysis's 34 short-term features.

One vector per 50 ms window with a 25 ms step: zero-crossing rate, energy,
energy entropy, spectral centroid, spread, entropy, flux and roll-off, 13
MFCCs, 12 chroma values and their deviation; no deltas.  These are the
baseline features of Boigne et al. 2020.
"""

from __future__ import annotations

import numpy as np

from budget.audio import SAMPLE_RATE
from budget.features.base import FeatureExtractor

WINDOW_SECONDS = 0.050
STEP_SECONDS = 0.025


class LLDExtractor(FeatureExtractor):
    """``lld``: 34 pyAudioAnalysis features per 50 ms frame (25 ms step)."""

    frame_rate = 1 / STEP_SECONDS

    def __init__(self, spec: str = "lld"):
        super().__init__(spec)

    def identity(self) -> dict[str, object]:
        from importlib.metadata import version

        return {
            "kind": "lld",
            "window_s": WINDOW_SECONDS,
            "step_s": STEP_SECONDS,
            "pyAudioAnalysis": version("pyAudioAnalysis"),
            "version": self.version,
        }

    def _extract(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from pyAudioAnalysis import ShortTermFeatures

        window = int(round(WINDOW_SECONDS * SAMPLE_RATE))
        step = int(round(STEP_SECONDS * SAMPLE_RATE))
        outputs = []
        for wave in inputs:
            features, _ = ShortTermFeatures.feature_extraction(wave, SAMPLE_RATE, window, step, deltas=False)
            outputs.append(np.ascontiguousarray(features.T, dtype=np.float32))
        return outputs

    @staticmethod
    def feature_names() -> list[str]:
        """The 34 feature names, in column order."""
        spectral = ["spectral_centroid", "spectral_spread", "spectral_entropy", "spectral_flux", "spectral_rolloff"]
        return (
            ["zcr", "energy", "energy_entropy", *spectral]
            + [f"mfcc_{i}" for i in range(1, 14)]
            + [f"chroma_{i}" for i in range(1, 13)]
            + ["chroma_std"]
        )
