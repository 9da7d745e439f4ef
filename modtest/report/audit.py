"""Run a whole audit outside pytest (``modtest audit``, scripts): the claims importance and output
coherence (plus clusterability and double lesions on request), judged and corrected together exactly
as a pytest session judges them; returns a :class:`Report`."""
from __future__ import annotations

from modtest.audit import AUTO_SHUFFLES, CHEAP_EDGES, Audit  # noqa: F401 - the constants' old home
from modtest.options import DEFAULTS
from modtest.report.schema import Report

#: the lesion probe's measures: what ``modtest audit`` claims by default (with the measures of any
#: probe declared with ``audit=True``, see :meth:`modtest.probes.Registry.audit_measures`)
MEASURES = ("importance", "output_coherence")


def run_audit(model, x, y, *, k: int = DEFAULTS["k"], seed: int = DEFAULTS["seed"],
              n_random: int = DEFAULTS["n_random"], alpha: float = DEFAULTS["alpha"],
              correction: str = DEFAULTS["correction"], clusterability=0, double_lesion: bool = False,
              double_n_random: int = 20, model_path=None, data_path=None, progress=None,
              protocol: str = DEFAULTS["protocol"], ensemble: int = DEFAULTS["ensemble"],
              max_random: int = DEFAULTS["max_random"], executor=None,
              claims=None) -> tuple[Report, object, object]:
    """Audit ``model`` on ``(x, y)``; returns ``(report, partition, lesion_result)``.

    Claims: ``claims`` (default: every measure of a probe declared with ``audit=True`` in the active
    registry: importance and output coherence, plus those of probes declared there, see
    ``docs/extending.md``; Fisher; the lesion study computes both of its measures whichever are
    claimed; any registered measure may be named), plus clusterability when ``clusterability`` (the number of
    weight shuffles) is > 0, corrected together with ``correction``. With ``clusterability="auto"``
    the n-cut is compared with 20 shuffles for the report only (not a claim) when the graph has at most
    :data:`CHEAP_EDGES` edges; ``report.extra["notes"]`` says when it was skipped. ``protocol``
    "robust" judges the claims over ``ensemble`` partitions with controls added up to ``max_random``
    where a decision is within Monte Carlo error; "paper" uses one partition and ``n_random``
    controls. ``progress``: a :class:`modtest.progress.Reporter`, False (none) or None (live lines on
    a terminal). ``partition``/``lesion_result`` are those of the first partition (``lesion_result`` is None when
    no lesion measure was claimed).
    ``executor`` runs the probes' work units (None: here; a :class:`~modtest.executors.dask.DaskExecutor`
    or ``distributed.Client``: on a Dask cluster; same results).
    """
    audit = Audit.open(model, (x, y), k=k, seed=seed, alpha=alpha, n_random=n_random, correction=correction,
                       protocol=protocol, ensemble=ensemble, max_random=max_random, executor=executor,
                       progress=progress)
    return audit.run(claims, clusterability=clusterability, double_lesion=double_lesion,
                     double_n_random=double_n_random, model_path=model_path, data_path=data_path)
