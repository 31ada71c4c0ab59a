"""Speech frames and text tokens aligned by attention (Xu et al., Interspeech 2019), with pretrained inputs.

``align_lstm``: audio frame features (a pretrained speech encoder) pass through
a Bi-LSTM, text token embeddings (BERT-family, second-to-last layer) through
another; for each token, additive attention over the audio frames gives an
aligned audio vector; token and aligned audio vectors, concatenated, pass
through a third Bi-LSTM, are max-pooled over tokens and classified.  Dropout
follows each layer.  This is the bimodal model of Boigne et al. 2020 (73.9% UA
on IEMOCAP with wav2vec and BERT).

Ablations from the same code, trained on the same paired data so a report
shows what each modality adds: ``align_lstm_audio`` (the audio Bi-LSTM,
max-pooled over frames) and ``align_lstm_text`` (the text Bi-LSTM, max-pooled
over tokens).

Padding never reaches a prediction: the LSTMs read packed sequences, attention
gives padded frames zero weight, and pooling skips padded tokens.  An empty
transcript is one zero token.

Runs train one model at a time: ``nn.LSTM`` has no ensemble axis, and vmapping
many cuDNN LSTMs is not supported, so this path does not use the ensemble
trainer of :mod:`budget.engine`.  Each run is seeded by itself, as there, and
takes the same step budget and data order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from budget.engine.adam import EVAL_SLOTS, make_optimiser
from budget.engine.config import TrainConfig
from budget.engine.device import training_device
from budget.engine.packed import DeviceFeatures, data_order, member_seeds
from budget.errors import BudgetError
from budget.features.featureset import FeatureSet
from budget.grid import Run
from budget.heads import DEFAULT_DROPOUT
from budget.progress import progress_bar

#: head name -> the modalities it reads
MODALITIES: dict[str, tuple[str, ...]] = {
    "align_lstm": ("audio", "text"),
    "align_lstm_audio": ("audio",),
    "align_lstm_text": ("text",),
}
HIDDEN = 128


class _BiLSTM(nn.Module):
    """A Bi-LSTM over padded sequences that only ever reads the valid steps."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


def _mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def _max_pool(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~_mask(lengths, x.shape[1])[..., None], float("-inf")).max(dim=1).values


class AlignLSTM(nn.Module):
    """The alignment model, or one of its single-modality ablations."""

    def __init__(self, modalities, n_classes, audio_dim=0, text_dim=0, hidden=HIDDEN, dropout=DEFAULT_DROPOUT):
        super().__init__()
        self.modalities = tuple(modalities)
        self.dropout = nn.Dropout(dropout)
        if "audio" in self.modalities:
            self.audio_lstm = _BiLSTM(audio_dim, hidden)
        if "text" in self.modalities:
            self.text_lstm = _BiLSTM(text_dim, hidden)
        if self.modalities == ("audio", "text"):
            self.attend_audio = nn.Linear(2 * hidden, hidden, bias=False)
            self.attend_text = nn.Linear(2 * hidden, hidden)
            self.attend_score = nn.Linear(hidden, 1, bias=False)
            self.fusion_lstm = _BiLSTM(4 * hidden, hidden)
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def align(self, tokens, audio, audio_lengths) -> torch.Tensor:
        """Attention weights ``(B, tokens, frames)`` of every token over the valid audio frames."""
        scores = self.attend_score(
            torch.tanh(self.attend_text(tokens)[:, :, None, :] + self.attend_audio(audio)[:, None, :, :])
        ).squeeze(-1)
        valid = _mask(audio_lengths, audio.shape[1])[:, None, :]
        return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)

    def forward(self, audio=None, audio_lengths=None, text=None, text_lengths=None) -> torch.Tensor:
        if self.modalities == ("audio",):
            encoded = self.dropout(self.audio_lstm(audio, audio_lengths))
            return self.classifier(self.dropout(_max_pool(encoded, audio_lengths)))
        tokens = self.dropout(self.text_lstm(text, text_lengths))
        if self.modalities == ("text",):
            return self.classifier(self.dropout(_max_pool(tokens, text_lengths)))
        frames = self.dropout(self.audio_lstm(audio, audio_lengths))
        aligned = torch.bmm(self.align(tokens, frames, audio_lengths), frames)  # (B, tokens, 2h)
        fused = self.dropout(self.fusion_lstm(torch.cat([tokens, aligned], dim=-1), text_lengths))
        return self.classifier(self.dropout(_max_pool(fused, text_lengths)))


class _Padded:
    """One modality's features, standardised per run and padded per batch."""

    def __init__(self, features: FeatureSet):
        self.features = features
        self.frames = torch.from_numpy(features.frames)
        self.stats = DeviceFeatures.upload(features, torch.device("cpu"))

    def standardisation(self, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of all frames of one run's training utterances."""
        mean, std = self.stats.standardisation([run], "")
        return mean[0], std[0]

    def batch(self, idx: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: str):
        lengths = self.features.lengths[idx]
        width = max(int(lengths.max()), 1)
        out = torch.zeros(len(idx), width, self.features.dim)
        for row, (i, n) in enumerate(zip(idx, lengths, strict=True)):
            start = self.features.offsets[i]
            out[row, :n] = (self.frames[start : start + n].float() - mean) / std.clamp_min(1e-5)
        # an empty sequence (an empty transcript) is one zero step
        return out.to(device), torch.from_numpy(np.maximum(lengths, 1)).to(device)


def train_bimodal_runs(
    head: str,
    modalities: tuple[str, ...],
    audio: FeatureSet | None,
    text: FeatureSet | None,
    labels: np.ndarray,
    runs: list[Run],
    n_classes: int,
    config: TrainConfig,
    hidden: int = HIDDEN,
) -> list[np.ndarray]:
    """Train each run of a bimodal head (or an ablation) and return its test predictions.

    ``head`` names the model in messages; ``modalities`` are what it reads
    (:data:`MODALITIES`, handed in by the registry).  ``audio`` and ``text``
    are aligned row for row with ``labels``; an ablation needs only its own
    modality.
    """
    sources = {"audio": audio, "text": text}
    for modality in modalities:
        if sources[modality] is None:
            raise BudgetError(f"{head} needs {modality} features")
    padded = {m: _Padded(sources[m]) for m in modalities}
    dims = {f"{m}_dim": sources[m].dim for m in modalities}
    predictions = []
    total_steps = sum(config.total_steps(len(run.train)) for run in runs)
    with progress_bar(total_steps, f"training {head} x{len(runs)} (one at a time)", unit="step") as advance:
        for run in runs:
            predictions.append(_train_one(head, modalities, padded, dims, labels, run, n_classes, config, hidden, advance))
    return predictions


def _inputs(modalities, padded, stats, idx, device) -> dict[str, torch.Tensor]:
    arguments = {}
    for m in modalities:
        x, lengths = padded[m].batch(idx, *stats[m], device)
        arguments[m], arguments[f"{m}_lengths"] = x, lengths
    return arguments


def _train_one(head, modalities, padded, dims, labels, run: Run, n_classes, config, hidden, advance) -> np.ndarray:
    device = training_device(config)
    # The run's own generator for initialisation and dropout (nn.LSTM and nn.Dropout draw from the global one):
    # seeded inside a fork, so the caller's global state is restored afterwards.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(member_seeds(run)[0])
        return _fit_one(modalities, padded, dims, labels, run, n_classes, config, hidden, advance)


def _fit_one(modalities, padded, dims, labels, run: Run, n_classes, config, hidden, advance) -> np.ndarray:
    device = training_device(config)
    model = AlignLSTM(modalities, n_classes, hidden=hidden, dropout=config.dropout, **dims).to(device)
    stats = {m: padded[m].standardisation(run) for m in modalities}
    steps = config.total_steps(len(run.train))
    optimiser, schedule = make_optimiser(model.parameters(), config, steps)
    targets = torch.from_numpy(labels.astype(np.int64))
    model.train()
    for idx in data_order(run, steps, config.batch_size):
        idx = idx[idx >= 0]
        logits = model(**_inputs(modalities, padded, stats, idx, device))
        loss = nn.functional.cross_entropy(logits, targets[idx].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        advance(1)
    model.eval()
    with torch.inference_mode():
        parts = [
            model(**_inputs(modalities, padded, stats, run.test[start : start + EVAL_SLOTS], device)).argmax(-1).cpu()
            for start in range(0, len(run.test), EVAL_SLOTS)
        ]
    return torch.cat(parts).numpy() if parts else np.zeros(0, np.int64)
