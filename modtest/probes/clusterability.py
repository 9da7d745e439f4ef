"""Clusterability: the model's n-cut against networks whose weights are shuffled within each layer.

The authors' companion method: a trained network is clusterable when its n-cut is lower than that of
networks with the same weight distribution per layer but shuffled positions. One unit of work per
clustering (the model itself, then each shuffle); a shuffle is a pure function of (seed, index).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from modtest._random import keyed_rng
from modtest._validation import check_int, check_seed
from modtest.probes.base import Probe, ProbeContext, Unit, run_probe
from modtest.results import ProbeResult

__all__ = ["clusterability", "sequential_clusterability", "ClusterabilityResult", "ClusterabilityProbe",
           "shuffle_kernels", "as_probe_result"]


@dataclass(frozen=True)
class ClusterabilityResult:
    """n-cut of the model, n-cuts of its shuffles, one-sided p (low n-cut = clusterable), z-score."""

    k: int
    seed: int
    ncut: float
    shuffled_ncuts: tuple[float, ...]
    p_value: float
    z_score: float

    def to_dict(self) -> dict:
        return asdict(self)


def shuffle_kernels(kernels: dict, rng: np.random.Generator) -> dict:
    """Permute every kernel's entries within its layer (same weight distribution, no structure); a
    separable layer's two kernels (a tuple) are each permuted within themselves."""
    def shuffle(k):
        return rng.permutation(k.ravel()).reshape(k.shape)

    return {n: tuple(shuffle(a) for a in k) if isinstance(k, tuple) else shuffle(k) for n, k in kernels.items()}


class ClusterabilityProbe(Probe):
    """Units: clustering ``i`` (-1: the model, 0..: shuffles ``lo .. hi - 1``); value: its n-cut."""

    name = "clusterability"

    def __init__(self, lo: int = 0, hi: int | None = None, with_model: bool = True):
        self.lo, self.hi, self.with_model = lo, hi, with_model

    def identity(self, ctx):
        return (ctx.model_fp, ctx.settings["k"], ctx.settings["seed"])

    def units(self, ctx):
        hi = ctx.settings["n_shuffles"] if self.hi is None else self.hi
        first = [-1] if self.with_model else []
        return [Unit(("clustering", i), i) for i in first + list(range(self.lo, hi))]

    def compute(self, ctx, item, progress=None):
        from modtest.cluster import cluster
        from modtest.graph import graph_from_spec

        s = ctx.settings
        spec = ctx.resource("graph-spec", ctx.model.graph_spec)
        kernels = None if item < 0 else shuffle_kernels(spec.kernels, keyed_rng("clusterability", s["seed"], item))
        ncut = cluster(graph_from_spec(spec, kernels), k=s["k"], seed=s["seed"]).ncut
        if progress is not None:
            progress(1)
        return ncut

    def combine(self, ctx, values):
        s = ctx.settings
        return summarize(s["k"], s["seed"], float(values[0]), np.asarray(values[1:], dtype=np.float64))


def summarize(k: int, seed: int, true: float, shuffled: np.ndarray) -> ClusterabilityResult:
    """p = (1 + #{shuffled n-cut <= true n-cut}) / (n + 1); z = (true - mean) / std."""
    n = len(shuffled)
    p = (1 + int((shuffled <= true).sum())) / (n + 1)
    sd = shuffled.std(ddof=1) if n > 1 else 0.0
    z = float((true - shuffled.mean()) / sd) if sd > 0 else float("nan")
    return ClusterabilityResult(k, seed, true, tuple(float(v) for v in shuffled), float(p), z)


def clusterability(model, k: int = 12, n_shuffles: int = 20, seed: int = 0, *,
                   workshare=None, executor=None) -> ClusterabilityResult:
    """Compare the n-cut of ``model`` with ``n_shuffles`` within-layer weight shuffles.

    p = (1 + #{shuffled n-cut <= true n-cut}) / (n_shuffles + 1); z = (true - mean) / std. With a
    ``workshare`` folder (or any ``executor``) the re-clusterings run as shared work units; same result.
    """
    from modtest.frameworks import adapt

    k = check_int("k", k)
    n_shuffles = check_int("n_shuffles", n_shuffles, minimum=1)
    seed = check_seed(seed)
    ctx = ProbeContext(adapt(model), settings={"k": k, "seed": seed, "n_shuffles": n_shuffles})
    ctx.resource("graph-spec", ctx.model.graph_spec)  # bad models fail here, before any work is shared
    from modtest.progress import task

    with task("clusterability", n_shuffles + 1) as bar:
        return run_probe(ClusterabilityProbe(), ctx, workshare if workshare is not None else executor, bar.update)


def sequential_clusterability(model, k: int = 12, n_shuffles: int = 20, seed: int = 0, *, alpha: float = 0.05,
                              max_shuffles: int | None = None, risk: float | None = None,
                              executor=None) -> ProbeResult:
    """Clusterability with its Monte Carlo error under control (the robust protocol).

    Starts with ``n_shuffles`` shuffles and doubles them (up to ``max_shuffles``, default 8 times as
    many) while the Clopper-Pearson interval of the exact shuffle p-value straddles ``alpha`` (or its
    upper end is above ``alpha / 2``: room for a session-wide correction); the verdict is pass
    (interval <= alpha), fail (> alpha) or inconclusive (see :mod:`modtest.robust`).
    """
    from modtest import robust
    from modtest._validation import check_alpha
    from modtest.executors import as_executor
    from modtest.frameworks import adapt

    k = check_int("k", k)
    n_shuffles = check_int("n_shuffles", n_shuffles, minimum=1)
    seed = check_seed(seed)
    alpha = check_alpha(alpha)
    cap = check_int("max_shuffles", 8 * n_shuffles if max_shuffles is None else max_shuffles, minimum=n_shuffles)
    risk = robust.RISK if risk is None else float(risk)
    ctx = ProbeContext(adapt(model), settings={"k": k, "seed": seed, "n_shuffles": n_shuffles})
    ctx.resource("graph-spec", ctx.model.graph_spec)
    run = as_executor(executor)
    values, lo, hi = [], 0, n_shuffles
    from modtest.progress import task

    with task("clusterability", n_shuffles + 1) as bar:
        while True:
            probe = ClusterabilityProbe(lo, hi, with_model=not values)
            if values:
                bar.add_total(hi - lo)
            values += run.map(probe, ctx, probe.units(ctx), bar.update)
            true, shuffled = float(values[0]), np.asarray(values[1:], dtype=np.float64)
            mc = robust.binomial_interval_p(int((shuffled <= true).sum()), len(shuffled), risk=risk)
            # a fail is final; a pass is sharpened to half of alpha (room for a correction over claims)
            if mc.decision(alpha) == robust.ABOVE or mc.high <= alpha / 2 or hi >= cap:
                break
            lo, hi = hi, min(2 * hi, cap)
    r = summarize(k, seed, true, shuffled)
    out = as_probe_result(r, {"n_shuffles": n_shuffles, "protocol": "robust", "alpha": alpha,
                              "max_shuffles": cap, "risk": risk})
    net = out.network["clusterability"]
    net.update({"p_low": mc.low, "p_high": mc.high, "verdict": robust.verdict(mc.low, mc.high, alpha)})
    return out


def as_probe_result(r: ClusterabilityResult, settings: dict | None = None) -> ProbeResult:
    """The clusterability result as a :class:`ProbeResult` (its own statistic: the shuffle p and z)."""
    net = {"p": r.p_value, "statistic": r.z_score, "ncut": r.ncut, "z_score": r.z_score,
           "n": len(r.shuffled_ncuts), "n_excluded": 0}
    return ProbeResult(probe="clusterability", rows=[], network={"clusterability": net},
                       settings={"k": r.k, "seed": r.seed, **(settings or {})},
                       extras={"shuffled_ncuts": list(r.shuffled_ncuts)})
