"""An acquisition study's statistics: each strategy's curve in clips, against labelling at random, run by run.

Every strategy's runs at one (fold, seed) start from the same seed set and
are scored on the same held-out fold, so each is compared with ``random``
paired by (fold, seed), as configurations of a budget curve are
(:func:`budget.analysis.paired_difference`): the UA difference at each size,
and the clips each needs to reach a target UA.  Clips needed are read off the
mean curve, interpolated linearly in log clips between the measured sizes
(``full`` at the pool's size), so a study that ran to the whole pool answers
every target its curves reach without extrapolating; the difference's 95%
interval is the 2.5th to 97.5th percentile of the same difference in
two-stage bootstrap resamples (folds, then seeds within), the same resample
for both strategies.  A strategy whose interval holds zero is not
distinguishable from random, and is said to be in those words.

**Advice without fishing.**  A study compares several strategies at several
sizes and targets, and at 95% each some comparison comes out "better" by
chance.  So the advice rests on one comparison per strategy, corrected for how
many are made: its UA minus random's averaged over the sizes between the seed
set and the whole pool (where all strategies hold the same clips), paired by
(fold, seed), with an interval at 1 - 0.05 / (strategies compared)
(Bonferroni).  Only a strategy distinguishable from random there is advised,
and its clips saved are then given at the targets where their own interval
excludes zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from budget.analysis.intervals import BOOTSTRAP, aggregate, bootstrap_indices, mean_interval, paired_difference
from budget.features import display_name
from budget.sampling import Size
from budget.strategies import BASELINE, STRATEGIES

#: Rungs of the target ladder: every this many UA points from the baseline's first measured mean to its last.
TARGET_STEP = 0.05


def strategy_view(results: pd.DataFrame, features: str, head: str) -> pd.DataFrame:
    """One (features, head)'s runs with each strategy as the configuration's second name, so the curve machinery
    (:func:`budget.analysis.aggregate`, :func:`budget.analysis.paired_difference`) reads strategies as it reads heads."""
    rows = results[(results["features"] == features) & (results["head"] == head)]
    return rows.assign(head=rows["strategy"]).drop(columns="strategy")


def strategy_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (features, head, strategy, size in clips): mean UA, its standard deviation and 95% interval, the clips."""
    tables = []
    for features, head in results[["features", "head"]].drop_duplicates().itertuples(index=False):
        table = aggregate(strategy_view(results, features, head))
        tables.append(table.rename(columns={"head": "strategy"}).assign(head=head)[
            ["features", "head", "strategy", "size", "n_train", "mean", "std", "ci_low", "ci_high", "runs"]])  # fmt: skip
    return pd.concat(tables, ignore_index=True).rename(columns={"n_train": "clips"})


def versus_random(results: pd.DataFrame) -> pd.DataFrame:
    """Every strategy against random at every size, paired by (fold, seed): UA points, 95% interval, runs ahead."""
    rows = []
    for features, head in results[["features", "head"]].drop_duplicates().itertuples(index=False):
        view = strategy_view(results, features, head)
        for name in (s for s in dict.fromkeys(view["head"]) if s != BASELINE):
            for size in sorted(view[view["head"] == name]["size"].unique()):
                difference = paired_difference(view, (features, name), (features, BASELINE), size)
                if difference is not None:
                    rows.append({"features": features, "head": head, "strategy": name, "size": size,
                                 "points": difference.points, "low": difference.low, "high": difference.high,
                                 "wins": difference.wins, "runs": difference.runs,
                                 "distinguishable": difference.distinguishable})  # fmt: skip
    return pd.DataFrame(rows, columns=["features", "head", "strategy", "size", "points", "low", "high", "wins", "runs",
                                       "distinguishable"])  # fmt: skip


@dataclass(frozen=True)
class Overall:
    """One strategy's UA minus random's, averaged over the inner sizes and paired by (fold, seed), in points, with
    its interval corrected for the number of strategies compared (:data:`FAMILY_LEVEL`)."""

    features: str
    head: str
    strategy: str
    points: float
    low: float
    high: float
    level: float

    @property
    def better(self) -> bool:
        return bool(self.low > 0)

    @property
    def worse(self) -> bool:
        return bool(self.high < 0)


#: The chance of any strategy coming out better than random by chance alone, over all a study compares.
FAMILY_LEVEL = 0.95


def overall(results: pd.DataFrame, seed: int = 0) -> list[Overall]:
    """Per (features, head) and non-oracle strategy: UA minus random's over the sizes strictly between the seed set
    and ``full``, averaged, paired by (fold, seed), with a Bonferroni interval over the strategies compared."""
    rng = np.random.default_rng(seed)
    found = []
    for features, head in results[["features", "head"]].drop_duplicates().itertuples(index=False):
        view = strategy_view(results, features, head)
        sizes = sorted(view["size"].unique())
        inner = [size for size in sizes[1:] if size.balanced] or sizes
        names = [name for name in dict.fromkeys(view["head"]) if name != BASELINE and not STRATEGIES[name].oracle]
        if BASELINE not in set(view["head"]) or not names:
            continue
        level = 1 - (1 - FAMILY_LEVEL) / len(names)
        axes = sorted(view["fold"].unique()), sorted(view["seed"].unique())
        baseline = _grids(view[view["head"] == BASELINE], inner, *axes)
        for name in names:
            difference = np.nanmean(_grids(view[view["head"] == name], inner, *axes) - baseline, axis=0)
            points, low, high = mean_interval(100 * difference, rng, level=level)
            found.append(Overall(features, head, name, points, low, high, level))
    return found


def clips_to_reach(clips: np.ndarray, ua: np.ndarray, target: float) -> float:
    """The clips at which a mean curve (ascending clips) first reaches ``target``, interpolated linearly in log
    clips; inf when it never does."""
    reached = np.flatnonzero(ua >= target)
    if not len(reached):
        return math.inf
    i = int(reached[0])
    if i == 0:
        return float(clips[0])
    low, high = math.log(clips[i - 1]), math.log(clips[i])
    share = (target - ua[i - 1]) / (ua[i] - ua[i - 1])
    return float(math.exp(low + share * (high - low)))


@dataclass(frozen=True)
class Saving:
    """Clips a strategy and random need to reach a target, and the difference with its paired 95% interval."""

    features: str
    head: str
    strategy: str
    target: float
    clips: float  # the strategy's; inf: not reached within the pool
    random_clips: float
    saved: float  # random's minus the strategy's
    low: float
    high: float

    @property
    def distinguishable(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    @property
    def share(self) -> float:
        """The clips saved as a share of what random needs."""
        return self.saved / self.random_clips if math.isfinite(self.random_clips) else math.nan

    def sentence(self, show=display_name) -> str:
        """``entropy reaches UA 0.70 with 310 clips where random needs 480: 170 fewer (95% interval 60 to 260)``."""
        name = f"{self.strategy} ({show(self.features)} + {self.head})"
        if not math.isfinite(self.clips) and not math.isfinite(self.random_clips):
            return f"neither {name} nor random reaches UA {self.target:.2f} within the pool"
        if not math.isfinite(self.clips):
            return f"{name} does not reach UA {self.target:.2f} within the pool; random needs {self.random_clips:.0f} clips"
        if not math.isfinite(self.random_clips):
            return f"{name} reaches UA {self.target:.2f} with {self.clips:.0f} clips; random does not within the pool"
        fewer = f"{abs(self.saved):.0f} {'fewer' if self.saved >= 0 else 'more'}"
        interval = f"95% interval {_count(self.low)} to {_count(self.high)}"
        verdict = "" if self.distinguishable else "; not distinguishable from random"
        return (f"{name} reaches UA {self.target:.2f} with {self.clips:.0f} clips where random needs "
                f"{self.random_clips:.0f}: {fewer} ({interval}){verdict}")  # fmt: skip


def _count(value: float) -> str:
    """A count of clips in an interval: one decimal below ten, so an end just above zero does not read as zero."""
    if not math.isfinite(value):
        return "+∞" if value > 0 else "−∞"
    return f"{value:+.1f}" if abs(value) < 10 else f"{value:+.0f}"


def savings(results: pd.DataFrame, pool_clips: float, targets: list[float] | None = None, n_boot: int = BOOTSTRAP,
            seed: int = 0) -> list[Saving]:  # fmt: skip
    """For each (features, head), strategy other than random and target (the curve's :func:`target_ladder`, and
    ``targets``): clips needed against random's, with the paired bootstrap interval of the difference.
    ``pool_clips`` is where ``full`` sits on the clips axis."""
    rng = np.random.default_rng(seed)
    summary = strategy_summary(results)
    found = []
    for features, head in results[["features", "head"]].drop_duplicates().itertuples(index=False):
        view = strategy_view(results, features, head)
        sizes = sorted(view["size"].unique())
        clips = np.array([pool_clips if size.full else size.per_class for size in sizes], dtype=float)
        ladder = sorted({*target_ladder(summary, features, head), *(round(t, 4) for t in targets or [])})
        axes = sorted(view["fold"].unique()), sorted(view["seed"].unique())
        grids = {name: _grids(view[view["head"] == name], sizes, *axes) for name in dict.fromkeys(view["head"])}
        if BASELINE not in grids:
            continue
        n_folds, n_seeds = grids[BASELINE].shape[1:]
        folds, seeds = bootstrap_indices(n_folds, n_seeds, n_boot, rng)
        resampled = {name: grid[:, folds[..., None], seeds].reshape(len(sizes), n_boot, -1) for name, grid in grids.items()}
        for target in ladder:
            need = {name: clips_to_reach(clips, np.nanmean(grid, axis=(1, 2)), target) for name, grid in grids.items()}
            boot = {name: np.array([clips_to_reach(clips, np.nanmean(r[:, b], axis=1), target) for b in range(n_boot)])
                    for name, r in resampled.items()}  # fmt: skip
            for name in (s for s in grids if s != BASELINE):
                low, high = _difference_interval(boot[BASELINE], boot[name])
                found.append(Saving(features, head, name, target, need[name], need[BASELINE],
                                    need[BASELINE] - need[name], low, high))  # fmt: skip
    return found


def _grids(runs: pd.DataFrame, sizes: list[Size], folds: list, seeds: list) -> np.ndarray:
    """One strategy's UA as sizes x folds x seeds (NaN where a run is missing)."""
    return np.stack([runs[runs["size"] == size].pivot_table(index="fold", columns="seed", values="ua", aggfunc="mean")
                     .reindex(index=folds, columns=seeds).to_numpy(dtype=float) for size in sizes])  # fmt: skip


def _difference_interval(baseline: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of ``baseline - other`` over resamples; a resample where one never reaches
    the target counts as infinitely far that way, and where neither does it says nothing."""
    with np.errstate(invalid="ignore"):
        difference = baseline - other
    difference = difference[~np.isnan(difference)]
    if not len(difference):
        return math.nan, math.nan
    low, high = (np.percentile(difference, q, method="inverted_cdf") for q in (2.5, 97.5))
    return float(low), float(high)


def target_ladder(summary: pd.DataFrame, features: str, head: str) -> list[float]:
    """Targets worth comparing a curve's strategies at: every :data:`TARGET_STEP` of UA above what random's seed set
    reaches, up to what random reaches with the whole pool."""
    random = summary[(summary["features"] == features) & (summary["head"] == head) & (summary["strategy"] == BASELINE)]
    if random.empty:
        return []
    means = random.sort_values("clips")["mean"].to_numpy()
    first = (math.floor(means[0] / TARGET_STEP + 1e-9) + 1) * TARGET_STEP
    return [round(first + i * TARGET_STEP, 4) for i in range(int((means.max() - first) / TARGET_STEP + 1e-9) + 1)]


def advice(overalls: list[Overall], found: list[Saving], show=display_name) -> list[str]:
    """Per (features, head), one plain sentence: whether choosing clips beats labelling at random (:func:`overall`,
    corrected for the strategies compared), and if so how much the best strategy saves, at which targets.  The
    ``balanced`` oracle is never advised."""
    lines = []
    for (features, head), group in _by_curve(overalls).items():
        curve = f"{show(features)} + {head}"
        better = sorted((o for o in group if o.better), key=lambda o: -o.points)
        compared = f"over the sizes measured, with the interval corrected for the {len(group)} strategies compared"
        if not better:
            worse = [o.strategy for o in group if o.worse]
            sentence = (f"For {curve}, no strategy is distinguishable from labelling at random ({compared})"
                        + (f"; {', '.join(worse)} did worse" if worse else "")
                        + ": choosing clips does not pay here; label clips at random")  # fmt: skip
            hint = _strongest_run(found, features, head)
            if hint:
                sentence += (f". On its own, {hint[0].strategy} saves {_share(hint)} of the clips random needs at UA "
                             f"{_targets(hint)} (each interval above zero, uncorrected): a lead to test with more folds "
                             "or seeds, not yet a reason to choose clips")  # fmt: skip
            lines.append(sentence + ".")
            continue
        best = better[0]
        mine = sorted((s for s in found if (s.features, s.head, s.strategy) == (features, head, best.strategy)),
                      key=lambda s: s.target)  # fmt: skip
        held = [s for s in mine if s.distinguishable and s.saved > 0 and math.isfinite(s.share)]
        sentence = (f"For {curve}, {best.strategy} beats labelling at random by {best.points:+.1f} UA points on average "
                    f"({100 * best.level:.1f}% interval {best.low:+.1f} to {best.high:+.1f}, {compared})")  # fmt: skip
        if held:
            sentence += f"; it saves about {_share(held)} of the clips random needs to reach UA {_targets(held)}"
            rest = [s for s in mine if s not in held]
            if rest:
                sentence += f"; at UA {_targets(rest)} the clips it saves are not distinguishable from zero"
        lines.append(sentence + ".")
    return lines


def _strongest_run(found: list[Saving], features: str, head: str) -> list[Saving]:
    """The longest run of consecutive targets at which one non-oracle strategy saves clips with an interval above
    zero (two targets at least), largest share first; empty when none has one."""
    best: list[Saving] = []
    for name in dict.fromkeys(s.strategy for s in found if (s.features, s.head) == (features, head)):
        if STRATEGIES[name].oracle:
            continue
        mine = sorted((s for s in found if (s.features, s.head, s.strategy) == (features, head, name)), key=lambda s: s.target)
        current: list[Saving] = []
        for saving in mine:
            current = [*current, saving] if saving.distinguishable and saving.saved > 0 else []
            if len(current) >= 2 and (len(current), np.mean([s.share for s in current])) > (
                    len(best), np.mean([s.share for s in best]) if best else 0):  # fmt: skip
                best = current
    return best


def _by_curve(items: list) -> dict[tuple[str, str], list]:
    curves: dict[tuple[str, str], list] = {}
    for item in items:
        curves.setdefault((item.features, item.head), []).append(item)
    return curves


def _share(group: list[Saving]) -> str:
    mean = float(np.mean([s.share for s in group]))
    for fraction, words in ((1 / 2, "a half"), (1 / 3, "a third"), (1 / 4, "a quarter"), (1 / 5, "a fifth")):
        if abs(mean - fraction) < 0.03:
            return words
    return f"{100 * mean:.0f}%"


def _targets(group: list[Saving]) -> str:
    targets = sorted(s.target for s in group)
    return f"{targets[0]:.2f}" if len(targets) == 1 else f"{targets[0]:.2f} to {targets[-1]:.2f}"
