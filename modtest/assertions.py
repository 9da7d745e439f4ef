"""Modularity assertions for tests: ``assert_clusterable``, ``assert_importance``, ...

Each assertion runs (or reuses) a probe, reads one network-level p-value and builds a
:class:`~modtest.results.Claim`:

* raw p > alpha (or nothing testable) -> ``AssertionError`` at once, with what was tested, the
  statistic, p, alpha and the sub-clusters that drove it;
* otherwise the claim is recorded in the session's collector (inside pytest with the modtest
  plugin) and returned as a provisional pass: at the end of the session all claims are corrected
  together (``--modtest-correction``) and those whose corrected p > alpha become failures.
  Outside pytest a claim is judged alone and passes.

``model`` is a ``keras.Model`` or a ``.keras``/``.h5`` path. ``data`` is ``(x, y)``, an ``.npz``
path with arrays ``x`` and ``y``, or None: the session's ``--data`` inside pytest, the shipped
example data outside. ``k``, ``alpha`` and ``seed`` default (None) to the session's
``--modtest-k``/``--modtest-alpha``/``--modtest-seed``, else 12, 0.05 and 0.
"""
from __future__ import annotations

import math
import os

from modtest import probes
from modtest._validation import check_alpha, check_choice, check_int
from modtest.errors import NoTestableSubclusters
from modtest.results import Claim

METHODS = ("fisher", "chi2")
_METHOD_LABEL = {"fisher": "Fisher", "chi2": "chi2", "shuffle": "shuffle"}


# --------------------------------------------------------------------------- argument seams

def resolve_model(model, trust: bool = False):
    """The native model from a model, an adapter or a path (safe loading unless ``trust``)."""
    from modtest.frameworks import adapt

    return adapt(model, trust=trust).model


def resolve_data(data, model, defaults=None):
    """``(x, y)`` checked against ``model`` from a tuple, an ``.npz`` path or the default data (at
    least two classes: data of one class cannot show a lesion's effect); data checked for ``model``
    at the front door (:func:`modtest.audit.bind_data`) is returned as it is."""
    from modtest._validation import check_data, check_two_classes, load_data
    from modtest.data import EvalData

    if isinstance(data, EvalData) and data.checked_for is not None and data.checked_for == _fingerprint(model):
        return data  # checked at the front door for this model: not again
    if data is None:
        if defaults is not None and defaults.data is not None:
            return defaults.data(model)
        from modtest._examples import EXAMPLE_DATA, example_path

        return check_data(model, *load_data(example_path(EXAMPLE_DATA)))
    if isinstance(data, (str, os.PathLike)):
        x, y = check_data(model, *load_data(data))
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = check_data(model, data[0], data[1])
    else:
        from modtest.errors import InvalidInput

        raise InvalidInput(f"data must be (x, y), an .npz path or None, got {type(data).__name__}")
    check_two_classes(y)
    return x, y


# --------------------------------------------------------------------------- helpers

def _fingerprint(model) -> str | None:
    from modtest.frameworks import ModelAdapter

    return model.fingerprint() if isinstance(model, ModelAdapter) else None


def _fmt(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(v) else f"{v:.3g}"


def _top_rows(rows, measure: probes.Measure, n: int = 3) -> str:
    pk = measure.row_p_key
    if not rows or not pk:
        return ""
    usable = [r for r in rows if isinstance(r, dict) and r.get(pk) is not None
              and not (isinstance(r.get(pk), float) and math.isnan(r[pk]))]
    usable.sort(key=lambda r: float(r[pk]))
    parts = []
    for r in usable[:n]:
        name = f"{r.get('layer', '?')}-{r.get('cluster', '?')}"
        eff = ""
        if measure.row_effect_key and measure.row_effect_key in r:
            eff = f" {measure.row_effect_key} {_fmt(r[measure.row_effect_key])}"
        parts.append(f"{name}{eff} p={_fmt(r[pk])}")
    if not parts:
        return ""
    more = ", ..." if len(usable) > n else ""
    return "top: " + ", ".join(parts) + more




def _hints(context, measure, model, k, seed, y, result) -> list[str]:
    """What :mod:`modtest.diagnose` finds for a lesion claim (empty for other probes)."""
    if measure.probe != "lesion":
        return []
    from modtest.diagnose import lesion_hints, partition_hints

    try:
        part = context.partition(model, k, seed)
        layers = model.unit_layers()
        if result is None:
            return partition_hints(part, layers)
        return lesion_hints(result, y, model.n_classes, part, layers)
    except Exception:  # noqa: BLE001 - hints are informative: never turn a verdict into a crash
        return []


class Inconclusive(AssertionError):
    """A claim whose evidence stays within seed noise of alpha (outside pytest, where no session
    decides what an inconclusive claim does)."""


def _judge(claim: Claim, collector, message: str, inconclusive: str) -> Claim:
    """Record/raise/return according to the raw p (and its noise bounds) and whether a session
    collects claims."""
    __tracebackhide__ = True
    low, high = claim.bounds
    if math.isnan(claim.p_raw) or low > claim.alpha:
        claim.passed, claim.outcome = False, "fail"
        if collector is not None:
            collector.record(claim)
        raise AssertionError(message)
    if collector is not None:
        claim.passed = None  # provisional: decided by the session-wide correction
        claim.correction = collector.method
        collector.record(claim)
        return claim
    claim.p_corrected, claim.p_low_corrected, claim.p_high_corrected = claim.p_raw, low, high
    claim.correction = "none"
    if high > claim.alpha:
        claim.passed, claim.outcome = False, "inconclusive"
        raise Inconclusive(inconclusive)
    claim.passed, claim.outcome = True, "pass"
    return claim


def _assert_measure(measure_name: str, model, k, alpha, data, seed, method: str,
                    extra_settings: dict | None = None) -> Claim:
    __tracebackhide__ = True
    from modtest.context import current

    context = current()
    collector, defaults = context.collector, context.defaults
    measure = context.registry.measure(measure_name)
    k = defaults.k if k is None else check_int("k", k, minimum=2)
    alpha = check_alpha(defaults.alpha if alpha is None else alpha)
    seed = defaults.seed if seed is None else check_int("seed", seed, minimum=0)
    model = context.adapter(resolve_model(model, trust=defaults.trust))
    declaration = context.registry.declarations.get(measure.probe)
    if declaration is not None and not declaration.uses_data:  # a probe of the weights only
        import numpy as np

        x, y = np.zeros(0, np.float32), np.zeros(0, np.int64)
    else:
        x, y = resolve_data(data, model, defaults)
    settings = defaults.probe_settings(measure.probe, alpha, context.registry)
    settings.update(extra_settings or {})
    protocol = settings.get("protocol", "paper")
    name = f"{measure_name}[k={k},seed={seed}]"
    ident = dict(k=k, seed=seed, protocol=protocol)
    why = None
    try:
        run = context.store.run(measure.probe, model, x, y, k, seed, settings)
    except NoTestableSubclusters as exc:
        why = str(exc)
        if why.startswith("no testable sub-clusters: "):
            why = why[len("no testable sub-clusters: "):]
    if why is not None:  # outside the except block: no chained traceback in the test report
        hints = _hints(context, measure, model, k, seed, y, None)
        claim = Claim(name=name, measure=measure_name, method=method, statistic=float("nan"),
                      p_raw=float("nan"), alpha=alpha, n_subclusters=0,
                      detail=f"no testable sub-clusters: {why}", hints=hints, **ident)
        msg = (f"no testable sub-clusters: {why} ({measure_name} at k={k}, seed={seed}"
               + ("".join(f"; {h}" for h in hints) if hints else "; try another k") + ")")
        return _judge(claim, collector, msg, msg)
    net = run.result.network.get(measure.network_key)
    if net is None:
        raise AssertionError(f"{measure_name}: probe {measure.probe!r} returned no "
                             f"{measure.network_key!r} result (has {sorted(run.result.network)})")
    bounds = {}
    if measure.probe == "clusterability":
        p = float(net.get("p", float("nan")))
        z = net.get("z_score")
        stat = float("nan") if z is None else float(z)
        n = int(net.get("n", 0))
        n_sub = 0
        detail = f"n-cut {_fmt(net.get('ncut'))} vs {n} within-layer shuffles, z={_fmt(stat)}"
        label = "shuffle p"
        where = f"({detail}; k={k}, seed={seed})"
        if "p_low" in net:
            bounds = {"p_low": float(net["p_low"]), "p_high": float(net["p_high"])}
    else:
        robust_net = net.get("chi2") if (method == "chi2" and isinstance(net.get("chi2"), dict)) else net
        pv, sv = net.get(f"{method}_p"), net.get(f"{method}_stat")
        p = float("nan") if pv is None else float(pv)
        stat = float("nan") if sv is None else float(sv)
        n_sub = int(net.get("n", len(run.result.rows)))
        excl = int(net.get("n_excluded", 0) or 0)
        detail = _top_rows(run.result.rows, measure)
        if "p_low" in robust_net:
            bounds = {"p_low": float(robust_net["p_low"]), "p_high": float(robust_net["p_high"])}
            from modtest.robust import partition_counts

            detail = (f"{partition_counts(robust_net.get('holds'), robust_net.get('fails'), net.get('ensemble'))} "
                      f"(quorum {robust_net.get('quorum')})"
                      + (f"; {detail}" if detail else ""))
        label = f"{_METHOD_LABEL[method]} p"
        where = (f"over {n_sub} sub-clusters" + (f" ({excl} excluded)" if excl else "")
                 + (f" ({detail})" if detail else "") + f"; statistic {_fmt(stat)}, k={k}, seed={seed}"
                 + (f"; claim: {measure.side_note}" if measure.side_note else ""))
    hints = _hints(context, measure, model, k, seed, y, run.result)
    from modtest.report.schema import probe_cost

    cost = {"probe": measure.probe, **probe_cost(run.result), "source": run.source, "seconds": float(run.seconds)}
    claim = Claim(name=name, measure=measure_name, method=method, statistic=stat, p_raw=p,
                  alpha=alpha, n_subclusters=n_sub, detail=detail, probe_seconds=float(run.seconds),
                  hints=hints, cost=cost, **bounds, **ident)
    low, high = claim.bounds
    span = f" (noise bounds [{_fmt(low)}, {_fmt(high)}])" if bounds else ""
    message = f"{measure_name} not shown: {label}={_fmt(p)}{span} > alpha={alpha:g} {where}"
    if math.isnan(p):
        message = f"{measure_name} not shown: p is undefined; {label}={_fmt(p)} > alpha={alpha:g} {where}"
    message += "".join(f"; {h}" for h in hints)
    undecided = (f"{measure_name} inconclusive: {label}={_fmt(p)} with noise bounds [{_fmt(low)}, "
                 f"{_fmt(high)}] straddling alpha={alpha:g} {where}; raise max_random or the ensemble, "
                 f"or accept it as not shown")
    return _judge(claim, collector, message, undecided)


# --------------------------------------------------------------------------- public assertions

def assert_clusterable(model, k=None, alpha=None, *, data=None, seed=None, n_shuffles: int = 20) -> Claim:
    """The model's n-cut is lower than that of ``n_shuffles`` within-layer weight shuffles.

    ``data`` is accepted for symmetry and ignored (clusterability reads only weights).
    """
    __tracebackhide__ = True
    n_shuffles = check_int("n_shuffles", n_shuffles, minimum=1)
    return _assert_measure("clusterability", model, k, alpha, None, seed, "shuffle",
                           {"n_shuffles": n_shuffles})


def assert_importance(model, k=None, alpha=None, *, data=None, seed=None, method: str = "fisher") -> Claim:
    """Lesioning sub-clusters hurts accuracy more than lesioning random same-layer units."""
    __tracebackhide__ = True
    method = check_choice("method", method, METHODS)
    return _assert_measure("importance", model, k, alpha, data, seed, method)


def assert_output_coherence(model, k=None, alpha=None, *, data=None, seed=None, method: str = "fisher") -> Claim:
    """Lesioning sub-clusters hurts some classes more than others (class-wise range of drops)."""
    __tracebackhide__ = True
    method = check_choice("method", method, METHODS)
    return _assert_measure("output_coherence", model, k, alpha, data, seed, method)


def assert_input_coherence(model, k=None, alpha=None, *, data=None, seed=None, method: str = "fisher") -> Claim:
    """One synthesized image activates each sub-cluster better than random same-layer units."""
    __tracebackhide__ = True
    method = check_choice("method", method, METHODS)
    return _assert_measure("input_coherence", model, k, alpha, data, seed, method)


def assert_measure(measure: str, model, k=None, alpha=None, *, data=None, seed=None,
                   method: str = "fisher") -> Claim:
    """Any registered measure (see :mod:`modtest.probes`), e.g. ``"activational_variance"``."""
    __tracebackhide__ = True
    method = check_choice("method", method, METHODS)
    return _assert_measure(measure, model, k, alpha, data, seed, method)
