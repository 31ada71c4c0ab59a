"""Ensemble training: the protocol's guarantees (batched equals alone, solved optima, budgets, memory, bf16)."""

from __future__ import annotations

import json
import pickle
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score
from tolerances import assert_float_close, decided_by_margin

import budget.engine.adam as engine_adam
import budget.engine.config as engine_config
import budget.engine.cost as engine_cost
import budget.engine.device as engine_device
import budget.engine.lbfgs as engine_lbfgs
import budget.engine.packed as engine_packed
from budget.engine.config import TrainConfig
from budget.engine.cost import members_per_chunk
from budget.engine.packed import DeviceFeatures, data_order
from budget.engine.runs import train_runs
from budget.errors import BudgetError
from budget.features.featureset import FeatureSet, MappedFrames
from budget.grid import Run
from budget.heads import HEADS, EnsembleLinear, PackedBatch
from budget.metrics import run_metrics
from budget.registry import head_spec
from budget.sampling import Size, balanced_subset


def synthetic_features(n_per_class=30, n_classes=3, dim=6, seed=0) -> tuple[FeatureSet, np.ndarray]:
    """Frame sequences whose mean depends on the class, lengths 3..20."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.standard_normal((n_classes, dim)) * 1.5
    sequences = [centres[y] + rng.standard_normal((int(rng.integers(3, 21)), dim)) for y in labels]
    lengths = np.array([len(s) for s in sequences])
    frames = np.concatenate(sequences).astype(np.float16)
    features = FeatureSet(
        spec="synthetic",
        utt_ids=np.array([f"u{i}" for i in range(len(labels))]),
        lengths=lengths,
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        frames=frames,
        mean=np.stack([s.mean(0) for s in sequences]).astype(np.float32),
        max=np.stack([s.max(0) for s in sequences]).astype(np.float32),
    )
    return features, labels


def runs_for(labels, size, seeds=(0, 1), test_every=5):
    test = np.arange(len(labels))[::test_every]
    train = np.setdiff1d(np.arange(len(labels)), test)
    return [Run(fold=f, seed=s, size=size, train=train[balanced_subset(labels[train], size, s + 10 * f)], test=test)
            for f in (0, 1) for s in seeds]  # fmt: skip


def left_in_files(features: FeatureSet, folder) -> FeatureSet:
    """``features`` with its frames written to three .npy files and read from them (:class:`MappedFrames`):
    utterances spread over the files at random, in reverse order within each, after two rows of padding."""
    shard = np.random.default_rng(0).integers(0, 3, len(features))
    files, first = [], np.zeros(len(features), dtype=np.int64)
    for number in range(3):
        pieces, position = [np.zeros((2, features.dim), dtype=features.frames.dtype)], 2
        for utterance in np.flatnonzero(shard == number)[::-1]:
            first[utterance], position = position, position + features.lengths[utterance]
            pieces.append(features.sequence(utterance))
        files.append(folder / f"{number}.frames.npy")
        np.save(files[-1], np.concatenate(pieces))
    return replace(features, frames=MappedFrames(files, shard, first, features.lengths))


@pytest.mark.parametrize("head", ["mlp_pool", "attn_pool", "mean_pool"])
def test_frames_left_in_files_train_as_a_copy_of_every_frame_does(tmp_path, head):
    features, labels = synthetic_features()
    mapped = left_in_files(features, tmp_path)
    np.testing.assert_array_equal(mapped.frames[:], features.frames)
    positions = np.random.default_rng(1).integers(0, len(features.frames), 50)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(mapped.frames)).take(positions), features.frames[positions])
    assert mapped.select(mapped.utt_ids) is mapped and features.select(features.utt_ids) is features  # no copy
    some = features.utt_ids[::-3]
    assert isinstance(mapped.select(some).frames, MappedFrames)
    np.testing.assert_array_equal(mapped.select(some).frames[:], features.select(some).frames)
    uploaded = DeviceFeatures.upload(mapped, torch.device("cpu"))
    assert uploaded.mapped and uploaded.has_frames
    with pytest.raises(BudgetError, match="stay in the store"):
        _ = uploaded.frames
    read_in = DeviceFeatures.upload(mapped, torch.device("cpu"), half=True)  # another precision: read in by blocks
    assert not read_in.mapped
    torch.testing.assert_close(read_in.frames, DeviceFeatures.upload(features, torch.device("cpu"), half=True).frames)
    runs = runs_for(labels, size=8)
    config = TrainConfig(steps=40, attention_segments=5, memory_mb=0)  # chunks of four runs
    copied = train_runs(HEADS[head], features, labels, runs, 3, config)
    read = train_runs(HEADS[head], mapped, labels, runs, 3, config)
    for a, b in zip(copied, read, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ua_is_balanced_accuracy_the_mean_per_class_recall():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    metrics = run_metrics(y_true, y_pred, ["neutral", "happy", "sad", "angry"])
    assert metrics["ua"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    recalls = [np.mean(y_pred[y_true == c] == c) for c in range(4)]
    assert metrics["ua"] == pytest.approx(np.mean(recalls))
    assert metrics["recall_sad"] == pytest.approx(recalls[2])
    assert np.array(eval(metrics["confusion"])).sum() == 200


def test_every_metric_read_off_the_confusion_matrix_is_scikit_learn_s_own():
    """Random folds of 1 to 60 clips of 2 to 7 classes, some classes missing from the fold or never predicted, some
    predictions all wrong: UA, WA, macro-F1 and each recall equal scikit-learn's functions on the same labels."""
    for case in range(300):
        _check_metrics_against_scikit_learn(np.random.default_rng(case), all_wrong=case % 10 == 0)


def _check_metrics_against_scikit_learn(rng: np.random.Generator, all_wrong: bool) -> None:
    n_classes = int(rng.integers(2, 8))
    held = rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False)  # the fold's classes
    y_true = rng.choice(held, size=int(rng.integers(1, 61)))
    y_pred = np.where(rng.random(len(y_true)) < rng.random(), y_true, rng.integers(0, n_classes, len(y_true)))
    if all_wrong:
        y_pred = (y_true + 1) % n_classes
    classes = [f"c{i}" for i in range(n_classes)]
    metrics = run_metrics(y_true, y_pred, classes)
    labels = list(range(n_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's warnings on classes the fold lacks
        assert metrics["ua"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
        assert metrics["wa"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
        assert metrics["macro_f1"] == pytest.approx(
            f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0), abs=1e-12)
        recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    ours = np.array([metrics[f"recall_c{i}"] for i in labels])
    assert np.array_equal(np.isnan(ours), np.isnan(recalls)) and np.allclose(ours[~np.isnan(ours)], recalls[~np.isnan(recalls)])
    assert json.loads(metrics["confusion"]) == confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_a_class_the_test_fold_lacks_has_no_recall_and_stays_out_of_ua_without_a_warning():
    """A held-out speaker who never expressed a class: scikit-learn warned on every such run (dozens of lines on
    EmoDB's seven classes) and the class's recall was written as 0, which pulled its recall curve down."""
    y_true = np.array([0, 0, 1, 1, 2, 2])  # no angry (3) in this fold
    y_pred = np.array([0, 3, 1, 1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = run_metrics(y_true, y_pred, ["neutral", "happy", "sad", "angry"])
    assert np.isnan(metrics["recall_angry"]) and metrics["recall_neutral"] == 0.5
    assert metrics["ua"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert metrics["macro_f1"] == pytest.approx(np.mean([2 / 3, 1, 2 / 3]))  # over the three classes held


def _logits(head, features, labels, runs, config):
    """Train ``runs`` as one ensemble and return the test logits of every member (the engine's own steps)."""
    captured = {}
    real = engine_adam._test_logits

    def keep_logits(model, inputs, runs_, kind, autocast, values):
        captured["logits"] = real(model, inputs, runs_, kind, autocast, values)
        return captured["logits"]

    original, engine_adam._test_logits = engine_adam._test_logits, keep_logits
    try:
        predictions = train_runs(HEADS[head], features, labels, runs, 3, config)
    finally:
        engine_adam._test_logits = original
    return captured["logits"], predictions


def stepped(head: str, steps: int = 12) -> TrainConfig:
    """A config that trains ``head`` by Adam steps (under the step budget the full-batch heads are solved instead).

    For the full-batch heads that is the paper's epochs schedule, so only runs
    of one size can share their ensemble.
    """
    if HEADS[head].full_batch:
        return TrainConfig(schedule="epochs", epochs=max(1, steps * 5 // 24), lr=3e-3, batch_size=5)
    return TrainConfig(steps=steps, lr=3e-3, batch_size=5)


def stepped_runs(head, labels):
    """Runs of two sizes sharing an ensemble (one size where the schedule is the paper's)."""
    return runs_for(labels, size=8) + ([] if HEADS[head].full_batch else runs_for(labels, size=12)[:2])


@pytest.mark.parametrize("head", sorted(HEADS))
def test_a_run_never_reads_its_mates(head, monkeypatch):
    """A member's result is bitwise the same whatever its mates draw: no state or data crosses members.

    The mate is the same run with another initialisation and dropout key, so every
    shape the engine sees is unchanged and any difference could only be a leak.
    """
    features, labels = synthetic_features()
    run, mate = runs_for(labels, size=8)[:2]
    config = stepped(head)
    first, _ = _logits(head, features, labels, [run, mate], config)
    real = engine_packed.member_seeds
    monkeypatch.setattr(engine_adam, "member_seeds", lambda r: tuple(v ^ 0xABCDEF for v in real(r)) if r is mate else real(r))
    second, _ = _logits(head, features, labels, [run, mate], config)
    assert not torch.equal(first[1], second[1])  # the mate did change
    assert torch.equal(first[0], second[0])


@pytest.mark.parametrize("head", sorted(HEADS))
def test_batched_training_equals_one_run_at_a_time(head):
    """A run trained beside others ends where it ends alone, up to what rounding can move.

    Alone, a member's packed batches are narrower, so its products sum in another
    order, and Adam normalises every gradient element: one at rounding level can
    still move its parameter by up to about lr a step.  So logits may differ by up
    to steps x lr per layer (standardised inputs), and a prediction must agree
    wherever its top two logits are further apart than that.
    """
    features, labels = synthetic_features()
    runs = stepped_runs(head, labels)
    config = stepped(head)
    together, predicted = _logits(head, features, labels, runs, config)
    bound = config.steps_for(len(runs[0].train)) * config.lr * _layers(head, features.dim)
    compared = 0
    for e, run in enumerate(runs):
        alone, (alone_predicted,) = _logits(head, features, labels, [run], config)
        np.testing.assert_allclose(together[e, : len(run.test)], alone[0, : len(run.test)], rtol=0, atol=bound)
        clear = decided_by_margin(alone[0, : len(run.test)], 2 * bound)
        np.testing.assert_array_equal(predicted[e][clear], alone_predicted[clear])
        compared += int(clear.sum())
    assert compared > sum(len(run.test) for run in runs) / 2  # the check is not vacuous


def _reference_logreg(features, labels, run, kind):
    """scikit-learn's fit at a tight tolerance: the optimum the pooled heads' L-BFGS must reach."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = features.mean if kind == "mean" else np.concatenate([features.mean, features.max], axis=1)
    scaler = StandardScaler().fit(x[run.train])
    model = LogisticRegression(C=TrainConfig().l2_c, tol=1e-10, max_iter=10_000)
    model.fit(scaler.transform(x[run.train]), labels[run.train])
    return model, scaler.transform(x[run.test])


@pytest.mark.parametrize("head", ["mean_pool", "meanmax_pool"])
def test_pooled_heads_are_solved_to_the_logreg_optimum_whatever_their_mates(head):
    """Under the step budget a pooled head is scikit-learn's L2 logistic regression, fitted by L-BFGS with its mates.

    The objective is strongly convex with modulus at least 1/(C n), so a gradient
    below the solver's tolerance leaves the weights within sqrt(P) x tol x C x n of
    the optimum, and a logit within that times (1 + the largest standardised input
    norm).  Logits are compared centred over classes (a common shift of the
    unpenalised biases changes nothing), alone and beside other runs.
    """
    check_pooled_optimum(head, "cpu")


def check_pooled_optimum(head: str, device: str) -> None:
    """Each run's pooled head, fitted beside others and alone on ``device``, has scikit-learn's logits (see above)."""
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8) + runs_for(labels, size=12)[:2]
    config = TrainConfig(steps=500, device=device)
    inputs = DeviceFeatures.upload(features, torch.device(device), half=False)
    kind = HEADS[head].pooled_kind
    together = engine_lbfgs.fit_full_batch(HEADS[head], inputs, labels, runs, 3, config)
    for e, run in enumerate(runs):
        alone = engine_lbfgs.fit_full_batch(HEADS[head], inputs, labels, [run], 3, config)
        model, x_test = _reference_logreg(features, labels, run, kind)
        n_params = model.coef_.size + model.intercept_.size
        weight_error = n_params**0.5 * config.lbfgs_tolerance * config.l2_c * len(run.train)
        bound = 2 * weight_error * (1 + float(np.linalg.norm(x_test, axis=1).max()))  # ours and scikit-learn's error
        expected = model.decision_function(x_test)
        expected -= expected.mean(1, keepdims=True)
        for fitted, member in ((together, e), (alone, 0)):
            with torch.inference_mode():
                logits = fitted.shared_logits(inputs.pooled(kind))[member, run.test].double().cpu().numpy()
            np.testing.assert_allclose(logits - logits.mean(1, keepdims=True), expected, rtol=0, atol=bound)


def test_full_batch_heads_are_solved_only_under_the_step_budget():
    assert engine_config.solved(HEADS["mean_pool"], TrainConfig())
    assert engine_config.solved(HEADS["attn_pool"], TrainConfig())
    assert not engine_config.solved(HEADS["mean_pool"], TrainConfig(schedule="epochs"))  # the paper's protocol: Adam, dropout
    assert not engine_config.solved(HEADS["attn_pool"], TrainConfig(schedule="epochs"))
    assert not engine_config.solved(HEADS["mlp_pool"], TrainConfig())
    assert head_spec("meanmax_pool").schedule(TrainConfig()) == "lbfgs"
    assert head_spec("meanmax_pool").schedule(TrainConfig(schedule="epochs")) == "epochs"
    assert head_spec("logreg").schedule(TrainConfig()) == "logreg" and not head_spec("logreg").budgeted


def test_attention_s_shared_logits_are_its_forward_pass():
    """The full-batch form (raw frames, standardisation folded into the weights) computes what forward does."""
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    head = HEADS["attn_pool"](_gens(len(runs)), features.dim, 3).eval()
    head.set_standardisation(*inputs.standardisation(runs, ""))
    slots = torch.arange(12).expand(len(runs), 12)
    width = int(features.lengths[:12].sum())
    with torch.inference_mode():
        packed = head(inputs.batch(slots, width, ""))
        shared = engine_lbfgs.attention_logits(head, inputs, np.arange(12))
        frames, index, present = inputs.gathered(np.arange(3))
        present[1] = False  # an utterance without frames must not turn a whole fit into NaN
        assert torch.isfinite(head.shared_logits(frames, index, present)).all()
    assert_float_close(shared, packed, depth=3)


def test_attention_fits_do_not_depend_on_their_mates_or_on_doubling_the_budget():
    """attn_pool is fitted to an optimum from one start: alone or beside other runs, and with twice the
    iterations, its predictions are the same (the objective is not convex, so this is checked, not derived)."""
    check_attention_fit("cpu")


def check_attention_fit(device: str) -> None:
    """attn_pool's full-batch fits on ``device``: the same predictions alone, beside mates and at twice the budget."""
    features, labels = synthetic_features(n_per_class=40)
    runs = runs_for(labels, size=8) + runs_for(labels, size=25)
    config = TrainConfig(steps=500, device=device)
    together = train_runs(HEADS["attn_pool"], features, labels, runs, 3, config)
    doubled = train_runs(HEADS["attn_pool"], features, labels, runs, 3, config.doubled())
    for e, run in enumerate(runs):
        (alone,) = train_runs(HEADS["attn_pool"], features, labels, [run], 3, config)
        np.testing.assert_array_equal(together[e], alone)
        np.testing.assert_array_equal(together[e], doubled[e])
    scores = [balanced_accuracy_score(labels[r.test], p) for r, p in zip(runs, together, strict=True)]
    assert min(scores) > 0.6  # and it learned: three classes, chance is 1/3


def test_attention_starts_at_its_optimum_under_uniform_attention(monkeypatch):
    """fit_attention's start is attention's own objective minimised over the classifier with the score at zero:
    the classifier's gradient there is below the tolerance (a start on other statistics would not be)."""
    features, labels = synthetic_features(n_per_class=20)
    runs = runs_for(labels, size=8)[:3]
    starts = []
    real = engine_lbfgs._minimise

    def record(head, rows, strength, config, iterations=0):
        if isinstance(head, HEADS["attn_pool"]):
            starts.append((head, rows, strength))
            return head.eval()  # the start itself, unoptimised
        return real(head, rows, strength, replace(config, lbfgs_tolerance=1e-7))

    monkeypatch.setattr(engine_lbfgs, "_minimise", record)
    train_runs(HEADS["attn_pool"], features, labels, runs, 3, TrainConfig())
    assert len(starts) == len(runs)
    for head, rows, strength in starts:
        assert (head.score.weight == 0).all()  # uniform attention
        head.train()
        logits = head.shared_logits(*rows.inputs)[0]
        loss = (rows.share[0] * (torch.logsumexp(logits, -1) - (logits * rows.target).sum(-1))).sum()
        loss = loss + 0.5 * strength[0] * sum(k * w.square().sum() for w, k in head.penalties())
        loss.backward()
        assert head.classifier.weight.grad.abs().max() < 1e-5 and head.classifier.bias.grad.abs().max() < 1e-5
        assert head.score.weight.grad.abs().max() > 1e-4  # attention has something left to learn


def test_segments_are_the_means_of_near_equal_stretches_of_each_utterance():
    features, labels = synthetic_features()
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    segmented = inputs.segmented(4)
    assert list(segmented.lengths) == [min(length, 4) for length in features.lengths]
    for utt in range(len(features.lengths)):
        frames = features.sequence(utt).astype(np.float64)
        count = min(len(frames), 4)
        bounds = [j * len(frames) // count for j in range(count + 1)]
        expected = np.stack([frames[bounds[j] : bounds[j + 1]].mean(0) for j in range(count)])
        start = segmented.offsets[utt]
        np.testing.assert_allclose(segmented.frames[start : start + count].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert inputs.segmented(0) is inputs and inputs.segmented(int(features.lengths.max())) is inputs
    assert inputs.segmented(4) is segmented  # made once
    runs = runs_for(labels, size=8)
    predictions = train_runs(HEADS["attn_pool"], features, labels, runs, 3, TrainConfig(attention_segments=4))
    assert all(len(p) == len(r.test) for p, r in zip(predictions, runs, strict=True))



def test_segments_of_frames_left_in_the_store_stay_there_and_equal_the_copy_s(tmp_path):
    features, _ = synthetic_features()
    copied = DeviceFeatures.upload(features, torch.device("cpu"), half=False).segmented(4)
    mapped = DeviceFeatures.upload(left_in_files(features, tmp_path), torch.device("cpu"), half=False).segmented(4)
    assert mapped.mapped and not copied.mapped  # written to a scratch file, read by position
    np.testing.assert_array_equal(mapped.offsets, copied.offsets)
    picked = np.random.default_rng(2).permutation(len(copied.frames))[:40]
    torch.testing.assert_close(mapped.rows(torch.from_numpy(picked)), copied.frames[picked], rtol=0, atol=0)
    torch.testing.assert_close(mapped.block(7, 60), copied.frames[7:60], rtol=0, atol=0)
    rows = np.array([5, 0, 17, 3])
    for a, b in zip(mapped.gathered(rows), copied.gathered(rows), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(mapped.utt_sum, copied.utt_sum, rtol=0, atol=0)

def test_attention_stops_at_its_iteration_cap_and_the_convergence_check_doubles_it():
    features, labels = synthetic_features(n_per_class=40)
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    runs = runs_for(labels, size=25)[:2]

    def evaluations(config: TrainConfig) -> list[int]:
        return [head.evaluations for head in engine_lbfgs.fit_attention(inputs, labels, runs, 3, config)]

    free = evaluations(TrainConfig(attention_iterations=0))
    assert min(free) > 4  # the cap below binds
    capped = TrainConfig(attention_iterations=2)
    assert max(evaluations(capped)) <= 3  # L-BFGS evaluates at most 1.25 x its iterations
    assert capped.doubled().lbfgs_iterations(True) == 4 and capped.scaled(8).lbfgs_iterations(True) == 16
    assert TrainConfig(steps=30).scaled(4).lbfgs_iterations(False) == 120


def test_attention_predicts_a_fold_in_blocks_as_at_once():
    features, labels = synthetic_features()
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    runs = runs_for(labels, size=8)[:1]
    (head,) = engine_lbfgs.fit_attention(inputs, labels, runs, 3, TrainConfig())
    rows = runs[0].test
    whole = engine_lbfgs.attention_logits(head, inputs, rows, block_values=10**9)
    smallest = engine_lbfgs.attention_logits(head, inputs, rows, block_values=1)  # one utterance a block
    some = engine_lbfgs.attention_logits(head, inputs, rows, block_values=3 * int(features.lengths.max()) * features.dim)
    assert whole.shape == (1, len(rows), 3)
    torch.testing.assert_close(smallest, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(some, whole, rtol=1e-5, atol=1e-5)


def test_a_run_folder_from_before_attention_segments_reads_as_trained_on_every_frame():
    recorded = TrainConfig.recorded({"steps": 3000, "attention_window": 1})
    assert recorded.attention_segments == 0 and recorded.attention_iterations == 0
    assert TrainConfig.recorded({"attention_segments": 32}).attention_segments == 32
    assert TrainConfig().attention_segments > 0 and TrainConfig().attention_iterations > 0


def _gens(n):
    return [torch.Generator().manual_seed(i) for i in range(n)]


def _layers(head: str, dim: int) -> int:
    """The head's linear layers and its pooling."""
    return 1 + sum(isinstance(m, EnsembleLinear) for m in HEADS[head](_gens(1), dim, 3).modules())


@pytest.mark.parametrize("head", sorted(HEADS))
def test_heads_learn_a_separable_problem(head):
    features, labels = synthetic_features(n_per_class=40)
    runs = runs_for(labels, size=25, seeds=(0,))
    predictions = train_runs(HEADS[head], features, labels, runs, 3, TrainConfig(steps=400, lr=3e-3, batch_size=8))
    for run, predicted in zip(runs, predictions, strict=True):
        assert balanced_accuracy_score(labels[run.test], predicted) > 0.8


@pytest.mark.parametrize("head", ["attn_pool", "mlp_pool"])
def test_padding_never_changes_a_prediction(head):
    """An utterance's logits are the same alone or packed beside longer ones (more frames in the batch)."""
    features, labels = synthetic_features()
    model = HEADS[head](_gens(2), features.dim, 3).eval()
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)

    def logits(slots):
        slots = torch.tensor(slots)
        width = int(np.append(features.lengths, 0)[slots.numpy()].sum(1).max())
        return model(inputs.batch(slots, width, ""))

    alone = logits([[3, -1, -1, -1], [3, -1, -1, -1]])
    packed = logits([[3, 10, 11, 12], [3, -1, -1, -1]])  # member 0's batch is longer, so member 1 is padded
    # the same frames through the same layers; only the product's row count differs
    depth = len([m for m in model.modules() if isinstance(m, EnsembleLinear)]) + 1
    assert_float_close(packed[1, 0], alone[1, 0], depth=depth)
    assert_float_close(packed[0, 0], alone[0, 0], depth=depth)


def test_a_run_s_standardisation_reads_its_own_training_rows_only():
    """Every other utterance is NaN: a standardisation that read the corpus (a dense selection times every row) would
    come out NaN; one that reads each run's rows gives numpy's mean and std of them, for statistics and frames."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 6, 40)
    frames = rng.normal(3, 2, (int(lengths.sum()), 5)).astype(np.float32)
    owner = np.repeat(np.arange(40), lengths)
    runs = [Run(0, seed, Size(4), np.sort(rng.choice(20, 8, replace=False)), np.arange(20, 40)) for seed in range(3)]
    frames[owner >= 20] = np.nan  # never a training row
    mean = np.stack([frames[owner == u].mean(0) for u in range(40)])
    inputs = DeviceFeatures(torch.from_numpy(frames), lengths, torch.from_numpy(mean), torch.from_numpy(mean))
    for kind, values, rows_of in (("mean", mean, lambda run: run.train), ("", frames, lambda run: np.isin(owner, run.train))):
        centre, spread = inputs.standardisation(runs, kind)
        for e, run in enumerate(runs):
            np.testing.assert_allclose(centre[e].numpy(), values[rows_of(run)].mean(0), rtol=1e-5)
            np.testing.assert_allclose(spread[e].numpy(), values[rows_of(run)].std(0), rtol=1e-4)


def test_pooled_heads_read_the_stored_statistics():
    features, _ = synthetic_features()
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    batch = inputs.batch(torch.tensor([[0, 4]]), 0, "meanmax")
    assert isinstance(batch, PackedBatch) and batch.pooled.shape == (1, 2, 2 * features.dim)
    np.testing.assert_array_equal(batch.pooled[0, 1, : features.dim].numpy(), features.mean[4])  # a copy, no arithmetic


def test_packed_batches_hold_each_slot_s_frames():
    features, _ = synthetic_features()
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    slots = torch.tensor([[2, 0, -1], [5, 7, 1]])
    width = int(features.lengths[[5, 7, 1]].sum())
    batch = inputs.batch(slots, width, "")
    for e, row in enumerate(slots.tolist()):
        for b, utt in enumerate(row):
            frames = batch.frames[e][batch.members[e, b]]
            expected = features.sequence(utt) if utt >= 0 else np.zeros((0, features.dim))
            np.testing.assert_array_equal(frames.numpy(), expected.astype(np.float32))  # gathered, not computed
            assert int(batch.counts[e, b]) == len(expected)


def test_a_frame_sample_takes_evenly_spaced_frames_of_each_slot_from_its_start():
    features, _ = synthetic_features()  # lengths 3..20
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    orders = np.array([[[2, 0, -1], [5, 7, 1]]])  # (steps, E, B)
    draws = np.array([[[0.0, 0.5, 0.9], [0.99, 0.3, 0.7]]])
    counts, starts = engine_packed.frame_samples(features.lengths, orders, draws, per_utterance=4)
    sample = engine_packed.FrameSample(torch.from_numpy(counts[0]), torch.from_numpy(starts[0]))
    batch = inputs.batch(torch.from_numpy(orders[0]), int(counts[0].sum(-1).max()), "", sample)
    for e, row in enumerate(orders[0].tolist()):
        for b, utt in enumerate(row):
            frames = batch.frames[e][batch.members[e, b]].numpy()
            if utt < 0:
                assert len(frames) == 0 and int(batch.counts[e, b]) == 0
                continue
            length = int(features.lengths[utt])
            taken = min(length, 4)
            start = int(np.floor(draws[0, e, b] * length))
            where = (start + np.arange(taken) * length) // taken  # spaced by length / taken, from the start
            assert len(set(where)) == taken and where.min() >= 0 and where.max() < length
            np.testing.assert_array_equal(frames, features.sequence(utt)[where].astype(np.float32))
            assert int(batch.counts[e, b]) == taken  # the slot's mean is over the frames read


def test_mlp_pool_trains_on_frame_samples_and_predicts_from_every_frame(monkeypatch):
    features, labels = synthetic_features(n_per_class=40)
    runs = runs_for(labels, size=25, seeds=(0,))
    widths = []
    real = DeviceFeatures.batch

    def spy(self, slots, width, kind, sample=None):
        frames = np.append(self.lengths, 0)[slots.cpu().numpy()].sum(-1).max()  # the widest member's utterances
        widths.append((sample is not None, width, int(frames)))
        return real(self, slots, width, kind, sample)

    monkeypatch.setattr(DeviceFeatures, "batch", spy)
    config = TrainConfig(steps=40, lr=3e-3, batch_size=8, train_frames=2)
    predictions = train_runs(HEADS["mlp_pool"], features, labels, runs, 3, config)
    training_steps = [w for w in widths if w[0]]
    assert len(training_steps) == 40 and all(width <= 8 * 2 for _, width, _ in training_steps)  # at most 2 a slot
    assert all(width >= frames for sampled, width, frames in widths if not sampled)  # evaluation: every frame
    assert min(balanced_accuracy_score(labels[r.test], p) for r, p in zip(runs, predictions, strict=True)) > 0.8
    widths.clear()  # attention does not average a per-frame function, so it never trains on a sample
    train_runs(HEADS["attn_pool"], features, labels, runs, 3, replace(config, schedule="epochs", epochs=2))
    assert widths and not any(sampled for sampled, _, _ in widths)


def test_predictions_gather_at_most_eval_values_frames_and_equal_one_batch(monkeypatch):
    """With frames so wide that 64 slots would pass the bound, evaluation takes fewer slots a batch, never more
    frame values than EVAL_VALUES (or ``eval_mb``) allows (one utterance at least), and predicts what one batch
    does."""
    features, labels = synthetic_features(n_per_class=40)
    runs = runs_for(labels, size=25, seeds=(0,))
    config = TrainConfig(steps=20, batch_size=8, train_frames=2, bf16=False)
    whole = train_runs(HEADS["mlp_pool"], features, labels, runs, 3, config)
    gathered = []
    real = DeviceFeatures.batch

    def spy(self, slots, width, kind, sample=None):
        if sample is None:
            gathered.append((slots.shape[1], len(slots) * width * self.dim))
        return real(self, slots, width, kind, sample)

    monkeypatch.setattr(DeviceFeatures, "batch", spy)
    bound = 4 * len(runs) * int(features.lengths.mean()) * features.dim
    monkeypatch.setattr(engine_adam, "EVAL_VALUES", bound)
    blocked = train_runs(HEADS["mlp_pool"], features, labels, runs, 3, config)
    assert gathered and max(slots for slots, _ in gathered) < min(len(run.test) for run in runs)  # blocks
    assert max(values for _, values in gathered) <= 2 * bound  # the bound plans on twice the mean length a slot
    for a, b in zip(whole, blocked, strict=True):
        np.testing.assert_array_equal(a, b)
    gathered.clear()  # a study's memory plan bounds the batch by eval_mb: here one utterance a member at a time
    least = train_runs(HEADS["mlp_pool"], features, labels, runs, 3, replace(config, eval_mb=0))
    assert gathered and {slots for slots, _ in gathered} == {1}
    for a, b in zip(whole, least, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bucketed_widths_pad_little_and_take_few_shapes():
    widths = np.arange(1, 20_000)
    padded = engine_packed.bucketed(widths)
    assert np.all(padded >= widths) and np.all(padded <= widths * (1 + 1 / 32))
    assert len(np.unique(padded[widths >= 1024])) <= 32 * 5  # at most 32 shapes an octave, 1024 to 20,000 frames
    assert np.array_equal(engine_packed.bucketed(widths[:64]), widths[:64])  # short batches keep their width


def test_centred_frames_keep_their_spread_in_bf16_and_standardise_alike():
    """A feature of offset 1000 and spread 1 loses its spread rounded to bf16, not once centred; statistics agree."""
    features, labels = synthetic_features()
    offset = np.zeros(features.dim, np.float32)
    offset[0] = 1000.0
    features = replace(features, frames=features.frames.astype(np.float32) + offset)
    inputs = DeviceFeatures.upload(features, torch.device("cpu"), half=False)
    centred = inputs.centred(torch.bfloat16)
    assert centred is inputs.centred(torch.bfloat16) and centred.frames.dtype == torch.bfloat16  # made once
    assert inputs._sums is None  # the frames' own sums, made for the centre alone, are let go (a corpus's worth)
    centre = (inputs.utt_sum.sum(0) / features.lengths.sum()).float()
    exact = inputs.frames - centre
    assert (centred.frames.float() - exact).abs().max() < 0.05 < (inputs.frames.bfloat16().float() - inputs.frames).abs().max()
    runs = runs_for(labels, size=8)
    (mean, std), (centred_mean, centred_std) = inputs.standardisation(runs, ""), centred.standardisation(runs, "")
    torch.testing.assert_close(centred_mean, mean - centre, rtol=0, atol=0.02)
    torch.testing.assert_close(centred_std, std, rtol=0.01, atol=0)


def test_every_run_takes_the_same_steps_whatever_its_size():
    config = TrainConfig(steps=40, batch_size=4, max_epochs=0)
    assert {config.steps_for(n) for n in (3, 20, 4000)} == {40}
    paper = TrainConfig(schedule="epochs", epochs=2, batch_size=4)
    assert paper.steps_for(20) == 10 and paper.steps_for(40) == 20
    run = Run(0, 0, 2, np.arange(3), np.arange(3, 5))
    order = data_order(run, steps=5, batch_size=4)
    assert order.shape == (5, 4) and (order[:, 3] == -1).all()  # 3 examples fill 3 of 4 slots
    assert sorted(order[0, :3]) == [0, 1, 2]


def test_a_small_subset_stops_after_its_passes_but_never_before_a_quarter_of_the_steps():
    config = TrainConfig(steps=400, batch_size=4, max_epochs=10)
    assert [config.steps_for(n) for n in (4, 80, 120, 4000)] == [100, 200, 300, 400]  # floor, passes, passes, cap
    doubled = config.doubled()  # the convergence check doubles every run's budget, whatever its size: two cycles
    assert [doubled.steps_for(n) for n in (4, 80, 120, 4000)] == [100, 200, 300, 400]
    assert [doubled.total_steps(n) for n in (4, 80, 120, 4000)] == [200, 400, 600, 800]


@pytest.mark.parametrize("head", ["mlp_pool", "attn_pool"])
def test_a_run_trained_on_from_its_checkpoint_is_the_run_trained_through(head, monkeypatch):
    """The convergence check's 2x run goes on from the 1x run's weights: the same weights and predictions, bit for
    bit, as two cycles trained at once, with a fresh optimiser each cycle (a warm restart), and different from one
    cycle (so the second cycle trained).  (Beside other mates a run moves at rounding level, as any run does.)"""
    features, labels = synthetic_features()
    runs = [replace(run, keeps=True) for run in stepped_runs(head, labels)]
    config = stepped(head)
    optimisers = []
    real = engine_adam.make_optimiser
    monkeypatch.setattr(engine_adam, "make_optimiser", lambda *args: optimisers.append(1) or real(*args))
    once = train_runs(HEADS[head], features, labels, runs, 3, config)
    through = train_runs(HEADS[head], features, labels, runs, 3, config.doubled())
    assert len(optimisers) == 3  # one cycle, then two
    started = [replace(run, start=output.checkpoint) for run, output in zip(runs, once, strict=True)]
    on = train_runs(HEADS[head], features, labels, started, 3, config.doubled())  # its mates as before: bit for bit
    assert len(optimisers) == 4  # the second cycle alone
    moved = False
    for first, whole, resumed in zip(once, through, on, strict=True):
        assert first.checkpoint.cycles == 1 and whole.checkpoint.cycles == resumed.checkpoint.cycles == 2
        for name, value in whole.checkpoint.parameters.items():
            np.testing.assert_array_equal(resumed.checkpoint.parameters[name], value)
            moved |= not np.array_equal(first.checkpoint.parameters[name], value)
        np.testing.assert_array_equal(resumed.predictions, whole.predictions)
    assert moved
    with pytest.raises(BudgetError, match="go on from one cycle below 2"):
        train_runs(HEADS[head], features, labels, [started[0], runs[1]], 3, config.doubled())


def test_a_run_keeps_its_weights_only_when_asked():
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)[:2]
    plain = train_runs(HEADS["mlp_pool"], features, labels, runs, 3, stepped("mlp_pool"))
    assert all(isinstance(output, np.ndarray) for output in plain)  # bare predictions, as trainers return them


def test_runs_of_different_step_counts_cannot_share_an_ensemble():
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)[:1] + runs_for(labels, size=10)[:1]
    with pytest.raises(BudgetError, match="same number of steps"):
        train_runs(HEADS["mean_pool"], features, labels, runs, 3, TrainConfig(schedule="epochs", epochs=1, batch_size=4))


def test_a_fitted_chunk_is_sized_by_the_rows_its_runs_read_not_by_the_corpus():
    budget, classes, width = 32 * 2**20, 4, 768
    at_corpus = engine_cost._fitted_members(budget, 100_000, None, classes, width)
    small_subsets = engine_cost._fitted_members(budget, 100_000, 500, classes, width)
    assert at_corpus < 16 < small_subsets  # a chunk of 1,000-row runs no longer fits as if each read 100,000 rows
    assert engine_cost._fitted_members(budget, 1_000, 500, classes, width) >= small_subsets
    per_row, weights = 32 * classes, 4 * width * (classes + 1) * (2 * engine_lbfgs.LBFGS_HISTORY + 4)
    for members in (small_subsets, small_subsets + 1):  # the largest that fits
        fits = members * (per_row * min(100_000, members * 500) + weights) <= budget
        assert fits == (members == small_subsets)


def test_a_small_memory_budget_chunks_the_ensemble_without_changing_results():
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)
    roomy = TrainConfig(steps=6, lr=3e-3, batch_size=5)
    tight = TrainConfig(steps=6, lr=3e-3, batch_size=5, memory_mb=0)
    cpu = torch.device("cpu")
    assert members_per_chunk(HEADS["mlp_pool"], features, tight, cpu, 3) == 1 < members_per_chunk(HEADS["mlp_pool"], features, roomy, cpu, 3)
    together, _ = _logits("mlp_pool", features, labels, runs, roomy)
    bound = roomy.steps * roomy.lr * _layers("mlp_pool", features.dim)  # as in the batched-equals-alone test
    for e, run in enumerate(runs):
        alone, _ = _logits("mlp_pool", features, labels, [run], tight)
        np.testing.assert_allclose(together[e, : len(run.test)], alone[0, : len(run.test)], rtol=0, atol=bound)


def test_cpu_bf16_is_detected_never_assumed(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine_device, "cpu_has_fast_bf16", lambda: False)  # an AVX2 CPU emulating bf16
    assert not engine_device.uses_autocast(cpu, TrainConfig())
    monkeypatch.setattr(engine_device, "cpu_has_fast_bf16", lambda: True)  # AVX-512 BF16 or AMX
    assert engine_device.uses_autocast(cpu, TrainConfig())
    assert not engine_device.uses_autocast(cpu, TrainConfig(bf16=False))


def test_cpu_bf16_is_read_from_the_instruction_set_never_timed(monkeypatch):
    # A timing probe on a busy machine chose float32 in one process of three: the choice must not depend on load.
    engine_device.cpu_has_fast_bf16.cache_clear()

    def no_clock():
        raise AssertionError("the bf16 choice must not time anything")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    fast = engine_device.cpu_has_fast_bf16()
    flags = engine_device._cpu_flags()
    if flags:  # Linux: torch's detection agrees with the kernel's flags
        assert fast == bool({"avx512_bf16", "amx_bf16"} & flags)
    engine_device.cpu_has_fast_bf16.cache_clear()


@pytest.mark.parametrize("head", ["attn_pool", "mlp_pool"])
def test_cpu_bf16_keeps_what_a_head_learns(head):  # attn_pool steps only under the paper's schedule
    """Where this CPU trains frame heads in bf16: the same UA as float32 within the spread of seeds."""
    if not engine_device.uses_autocast(torch.device("cpu"), TrainConfig()):
        pytest.skip("this CPU has no bf16 products (AVX-512 BF16 or AMX), so training keeps float32 here")
    check_bf16_keeps_ua(head, "cpu")


def check_bf16_keeps_ua(head: str, device: str) -> None:
    """bf16 autocast against float32 on a learnable problem: the same UA within the spread of seeds."""
    features, labels = synthetic_features(n_per_class=40)
    runs = runs_for(labels, size=25, seeds=(0, 1, 2))
    scores = {}
    schedule = "epochs" if HEADS[head].full_batch else "steps"  # full-batch fits run in float32
    for bf16 in (False, True):
        config = TrainConfig(schedule=schedule, steps=300, epochs=32, lr=3e-3, batch_size=8, device=device, bf16=bf16)
        predictions = train_runs(HEADS[head], features, labels, runs, 3, config)
        scores[bf16] = np.array([balanced_accuracy_score(labels[r.test], p) for r, p in zip(runs, predictions, strict=True)])
    spread = max(scores[False].std(ddof=1), 1 / len(runs[0].test))  # one test utterance at the least
    assert abs(scores[True].mean() - scores[False].mean()) <= 2 * spread


def test_the_convergence_check_flags_a_tiny_budget_and_passes_a_sufficient_one():
    """Three steps leave mlp_pool learning (more steps move UA by many points); 24 reach the plateau."""
    from budget.analysis import convergence_table

    features, labels = synthetic_features(n_per_class=40)
    runs = runs_for(labels, size=25, seeds=(0, 1))

    def results(config):
        predictions = train_runs(HEADS["mlp_pool"], features, labels, runs, 3, config)
        return pd.DataFrame([{"features": "synthetic", "head": "mlp_pool", "size": r.size, "fold": r.fold, "seed": r.seed,
                              "ua": balanced_accuracy_score(labels[r.test], p)} for r, p in zip(runs, predictions, strict=True)])  # fmt: skip

    for steps, flagged in ((3, True), (24, False)):
        config = TrainConfig(steps=steps, lr=3e-3, batch_size=8)
        (cell,) = convergence_table(results(config), results(config.doubled())).itertuples()
        assert cell.flagged == flagged, f"{steps} steps: UA {cell.ua_default:.3f}, doubled {cell.ua_doubled:.3f}"


def test_warm_up_pays_torch_s_first_optimiser_imports_before_the_cost_model_times_anything():
    # In a fresh interpreter: the first optimiser imports torch._dynamo (about a second), which once made the
    # first full-batch head's estimate ten times its cost.  After warm_up, optimisers import nothing more.
    import subprocess
    import sys

    probe = (
        "import sys, torch\n"
        "from budget.engine.device import warm_up\n"
        "warm_up(torch.device('cpu'))\n"
        "before = set(sys.modules)\n"
        "p = torch.zeros(2, requires_grad=True)\n"
        "torch.optim.LBFGS([p]); torch.optim.AdamW([p], fused=True)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_short_probe_is_timed_again_and_a_long_one_is_not():
    """On the compare grid logreg's probe, a single fit of milliseconds, priced it at 3.7 times what it took."""
    calls = []

    def first_call_slow():
        calls.append(1)
        time.sleep(0.2 if len(calls) == 1 else 0.0)

    assert engine_cost.short_call_seconds(first_call_slow, short=1.0) < 0.1 and len(calls) == 2
    calls.clear()
    assert engine_cost.short_call_seconds(first_call_slow, short=0.1) >= 0.2 and len(calls) == 1


def test_frames_go_to_cuda_in_half_precision_only_from_a_float16_store(monkeypatch):
    # A float32 store may hold values beyond float16's 65504 (the store refuses float16 for them): on CUDA
    # they must stay float32, not become inf.  Decided without a GPU: the rule is a function of dtype and device.
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert DeviceFeatures.upload_dtype(np.dtype(np.float16), cuda) == torch.float16
    assert DeviceFeatures.upload_dtype(np.dtype(np.float32), cuda) == torch.float32
    assert DeviceFeatures.upload_dtype(np.dtype(np.float16), cpu) == torch.float32
    assert DeviceFeatures.upload_dtype(np.dtype(np.float32), cpu) == torch.float32
    features, _ = synthetic_features()
    assert DeviceFeatures.upload(features, cpu).frames.dtype == torch.float32
    monkeypatch.setattr(DeviceFeatures, "upload_dtype", staticmethod(lambda stored, device: torch.float16))
    assert DeviceFeatures.upload(features, cpu).frames.dtype == torch.float16  # upload follows the rule


def test_out_of_device_memory_fitting_attention_says_what_to_change(monkeypatch):
    # attention is fitted one run at a time, so fewer runs at once (memory_mb) cannot help
    features, labels = synthetic_features()
    runs = runs_for(labels, size=8)

    def no_room(self, rows):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 11.30 GiB")

    monkeypatch.setattr(DeviceFeatures, "gathered", no_room)
    with pytest.raises(BudgetError, match=r"fitting attn_pool on one run's frames.*--max-seconds.*--device cpu"):
        train_runs(HEADS["attn_pool"], features, labels, runs, 3, TrainConfig(device="cpu"))
