"""The training engine: every run of one head on one feature set, advanced together on the device.

A *run* (:class:`budget.grid.Run`) is one (fold, seed, size): a training subset
and the held-out fold to test on.  :func:`budget.engine.runs.train_runs`
trains a list of runs of one head as one ensemble (chunked only by memory) and
returns each run's test predictions.

Modules: ``config`` (the settings), ``device`` (where and in what precision),
``packed`` (features on the device, each run's draws), ``adam`` (stepped
heads), ``lbfgs`` (fitted heads), ``cost`` (memory and time per run),
``runs`` (the entry point and the logreg reference).

**The budget does not follow the labels.**  Under the default ``steps``
schedule a run takes ``steps`` optimiser steps of the same batch size,
whatever its subset, with the learning rate decayed to zero on a cosine
(``max_epochs`` lets a small subset stop after that many passes over it, but
never before a quarter of ``steps``); the convergence check doubles every
run's budget to show the curve would not move.  The paper's protocol
(``epochs``: a fixed number of passes at a constant rate, so small subsets get
few steps) stays available for reproduction.

**A step reads a sample of each utterance's frames.**  ``mlp_pool`` is an MLP
applied to every frame, then a mean over frames: any subset of an utterance's
frames estimates the same mean, so a training step reads ``train_frames``
evenly spaced frames of each utterance (from a random start, drawn from the
run's own seed) rather than all of them, and costs that much less.
Prediction reads every frame.  ``train_frames = 0`` reads every frame in
training too.

**Full-batch heads are fitted, not stepped.**  ``mean_pool`` and
``meanmax_pool`` are multinomial logistic regressions on pooled statistics,
convex in their weights; ``attn_pool`` adds a linear frame score before the
pooling.  Under the ``steps`` schedule every run of these heads is fitted to
an optimum of its L2-penalised objective by full-batch L-BFGS, stopped by
scikit-learn's rule (no gradient element above ``lbfgs_tolerance``): the
pooled heads all runs of a chunk as one separable objective from a zero
start, attention each run alone on its own utterances, from its optimum under
uniform attention (mean pooling).  The classifier's penalty is the ``logreg``
reference's (scikit-learn's ``C``, ``TrainConfig.l2_c``); attention's score
weights get a stronger one (:data:`budget.heads.ATTN_SCORE_PRIOR`); dropout
is not used.  No learning rate or step count can then bend a curve: doubling
``steps`` (the L-BFGS iteration cap) leaves a fit that converged unchanged,
and ``mean_pool`` is the engine's own reproduction of ``logreg``.

**Device-resident.**  A feature set is uploaded once (frames in half precision
on CUDA, float32 on CPU).  Each run's data order is drawn once, up front, from
its own generator; every step gathers all members' batches on the device from
those index tensors, and dropout masks come from a counter-based hash
(:mod:`budget.heads`), so no step loops over members in Python and a run's
result does not depend on which runs shared its ensemble.  Frame heads'
matrix products run in bf16 autocast on CUDA cards that support it and on
CPUs with bf16 products in hardware (:func:`budget.engine.device.uses_autocast`).
"""
