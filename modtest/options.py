"""Every setting in one table: its pytest option and ini key, its ``modtest`` command-line flag, its
default and its check. The pytest plugin and the CLI both read their options from here, so a value
gets the same check and the same one-line message wherever it is given.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modtest.errors import InvalidInput

#: the defaults of the paper's protocol and of every entry point (API, CLI, pytest)
DEFAULTS = {"k": 12, "alpha": 0.05, "seed": 0, "n_random": 20, "correction": "holm", "protocol": "robust",
            "ensemble": 10, "max_random": 320, "inconclusive": "report"}

CORRECTION_METHODS = ("holm", "fdr_bh", "bonferroni", "none")
BACKENDS = ("tensorflow", "jax", "torch")
#: "robust": an ensemble of partitions and adaptive controls (the default); "paper": one partition,
#: 20 fixed controls per sub-cluster, as the paper did (for replication)
PROTOCOLS = ("robust", "paper")
#: what an inconclusive claim does to the test and the exit status: "report" (shown, exit status
#: unchanged) or "fail" (the test fails)
INCONCLUSIVE_MODES = ("report", "fail")
#: how probe progress is shown (see modtest.progress)
PROGRESS_MODES = ("auto", "live", "heartbeat", "off")


@dataclass(frozen=True)
class Option:
    """One setting. ``dest`` is also its ini key; ``cli`` its ``modtest`` flag (None: pytest only)."""

    dest: str
    flag: str
    kind: str  # "int", "float", "str", "path", "bool", "list"
    default: Any
    help: str
    cli: str | None = None
    check: Callable[[Any, str], Any] | None = None  # (parsed value, flag) -> value; raises InvalidInput
    #: the value of a pytest flag given without one (``--modtest-compare`` alone: "latest"); None: the
    #: flag takes a value
    const: Any = None


def _int_at_least(minimum: int):
    def check(v, flag):
        if v < minimum:
            raise InvalidInput(f"{flag} must be an integer >= {minimum}, got {v}")
        return v
    return check


def _open_unit(v, flag):
    if not 0.0 < v < 1.0:  # NaN too
        raise InvalidInput(f"{flag} must be a number in (0, 1), got {v:g}")
    return v


def _positive(v, flag):
    if not v > 0:  # NaN too
        raise InvalidInput(f"{flag} must be a positive number, got {v:g}")
    return v


def _scheduler(v, flag):
    from modtest.executors.dask import check_address  # no Dask import: a bad address is found at once

    return check_address(v, flag)


def _choice(choices):
    def check(v, flag):
        if v not in choices:
            raise InvalidInput(f"{flag}: unknown value {v!r}; choose one of {', '.join(choices)}")
        return v
    return check


OPTIONS = (
    Option("model", "--model", "path", None, "model under test (.keras/.h5, .pt2 from torch.export, or a Hugging "
           "Face model folder); default: the shipped example MLP"),
    Option("data", "--data", "path", None,
           "evaluation data: an .npz with arrays x and y, or a folder of class subfolders of images (resized "
           "to the model's input; labels: the subfolders in sorted order); default: the shipped digits data, "
           "when it fits the model; none: no data (a session that checks weights only)", cli="--data"),
    Option("modtest_max_examples", "--modtest-max-examples", "int", None,
           "use a stratified subsample of N examples of the data (same N examples on every run)",
           cli="--max-examples", check=_int_at_least(1)),
    Option("modtest_k", "--modtest-k", "int", DEFAULTS["k"], "number of clusters k (default 12)", cli="--k",
           check=_int_at_least(2)),
    Option("modtest_alpha", "--modtest-alpha", "float", DEFAULTS["alpha"], "significance level (default 0.05)",
           cli="--alpha", check=_open_unit),
    Option("modtest_seed", "--modtest-seed", "int", DEFAULTS["seed"],
           "seed for clustering and random controls (default 0)", cli="--seed", check=_int_at_least(0)),
    Option("modtest_correction", "--modtest-correction", "str", DEFAULTS["correction"],
           "session-wide multiple-comparison correction: holm, fdr_bh, bonferroni, none (default holm)",
           cli="--correction", check=_choice(CORRECTION_METHODS)),
    Option("modtest_protocol", "--modtest-protocol", "str", DEFAULTS["protocol"],
           "robust (default: verdicts over an ensemble of partitions, controls added where a decision is "
           "within Monte Carlo error) or paper (one partition, 20 controls, for replication)",
           cli="--protocol", check=_choice(PROTOCOLS)),
    Option("modtest_ensemble", "--modtest-ensemble", "int", DEFAULTS["ensemble"],
           "partitions (clustering seeds) a robust claim is judged over (default 10)", cli="--ensemble",
           check=_int_at_least(1)),
    Option("modtest_max_random", "--modtest-max-random", "int", DEFAULTS["max_random"],
           "most random controls per sub-cluster in the robust protocol (default 320)", cli="--max-random",
           check=_int_at_least(1)),
    Option("modtest_inconclusive", "--modtest-inconclusive", "str", DEFAULTS["inconclusive"],
           "an inconclusive claim (evidence within noise of alpha): report (default: shown as "
           "INCONCLUSIVE, exit status unchanged) or fail (the test fails)", cli="--inconclusive",
           check=_choice(INCONCLUSIVE_MODES)),
    Option("modtest_cache", "--modtest-cache", "path", None, "probe cache folder (default .modtest/cache)"),
    Option("modtest_trust_model", "--modtest-trust-model", "bool", False,
           "allow models whose loading runs code (Lambda layers, custom objects)", cli="--trust-model"),
    Option("modtest_json", "--modtest-json", "path", None,
           "write the audit (every claim's raw/corrected p and verdict, every probe) as JSON here", cli="--json"),
    Option("modtest_backend", "--modtest-backend", "str", None, "Keras backend: tensorflow, jax or torch",
           check=_choice(BACKENDS)),
    Option("modtest_html", "--modtest-html", "path", None, "write the self-contained HTML report of the audit here",
           cli="--html"),
    Option("modtest_save", "--modtest-save", "str", None,
           "save the session's audit as baseline NAME (in --modtest-storage)"),
    Option("modtest_storage", "--modtest-storage", "path", None, "baseline folder (default .modtest/baselines)"),
    Option("modtest_compare_fail", "--modtest-compare-fail", "str", None,
           "comma-separated regression rules for --modtest-compare, e.g. p:10x,important:-2"),
    Option("modtest_progress", "--modtest-progress", "str", "auto",
           "progress of probes running longer than 2 s: auto (default: a live line on a terminal, a "
           "heartbeat line every 30 s otherwise or with -q), live, heartbeat or off", cli="--progress",
           check=_choice(PROGRESS_MODES)),
    Option("modtest_scheduler", "--modtest-scheduler", "str", None,
           "run probe work units (lesion, visualization, clusterability, double lesion) on the "
           "dask.distributed cluster at ADDRESS (tcp://host:8786) or of a scheduler file (.json); "
           "needs the dask extra", cli="--scheduler", check=_scheduler),
    Option("modtest_scheduler_timeout", "--modtest-scheduler-timeout", "float", 10.0,
           "seconds to wait for the Dask scheduler and a first worker before failing (default 10)",
           cli="--scheduler-timeout", check=_positive),
    Option("modtest_probes", "--modtest-probes", "list", None,
           "comma-separated probe modules (dotted names or .py files) whose declared probes this audit adds "
           "(docs/extending.md); modtest audit claims the measures of those declared with audit=True",
           cli="--probes"),
    Option("modtest_prefetch", "--modtest-prefetch", "list", None,
           "comma-separated measures (e.g. importance,output_coherence) whose probe every process (each "
           "xdist worker) joins at session start, sharing its work units through <cache>/workshare"),
)
COMPARE_HELP = ("compare the audit with baseline NAME (no NAME, or the ini value 'latest': the most "
                "recent); fail the session when a claim that held no longer holds or a "
                "--modtest-compare-fail rule breaks. Write --modtest-compare=NAME")
OPTIONS += (
    Option("modtest_compare", "--modtest-compare", "str", None, COMPARE_HELP, const="latest",
           check=lambda v, flag: v or "latest"),
)
BY_DEST = {o.dest: o for o in OPTIONS}


def parse(option: Option, raw, flag: str | None = None):
    """``raw`` (a string from a command line or ini file, or a value) as the option's type, checked;
    a bad value raises :class:`InvalidInput` with one line naming ``flag``."""
    flag = flag or option.flag
    if raw is None:
        return option.default
    if option.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise InvalidInput(f"{flag} must be true or false, got {raw!r}")
    if option.kind == "int":
        try:
            v = int(str(raw).strip())
        except ValueError:
            raise InvalidInput(f"{flag} must be an integer, got {raw!r}") from None
    elif option.kind == "float":
        try:
            v = float(str(raw).strip())
        except ValueError:
            raise InvalidInput(f"{flag} must be a number, got {raw!r}") from None
    elif option.kind == "path":
        v = Path(str(raw)).expanduser()
    elif option.kind == "list":
        v = tuple(p.strip() for p in str(raw).split(",") if p.strip())
    else:
        v = str(raw).strip()
    return option.check(v, flag) if option.check is not None else v
