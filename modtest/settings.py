"""Settings: every option of the table in :mod:`modtest.options`, parsed and checked once.

The pytest plugin (:meth:`Settings.from_pytest`) and the command line (:meth:`Settings.from_args`)
only translate their raw values (command line, ini keys); every check is made here, each value by
its option's check function and the checks that need several options (the ensemble's quorum, save
names, compare rules) by :func:`_check_together`, with one wording per mistake naming the flag of
the interface in use (``--modtest-k`` under pytest, ``--k`` for ``modtest``). Below the door,
code reads a :class:`Settings` and never re-checks it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modtest.errors import InvalidInput, ModtestError
from modtest.options import BY_DEST, OPTIONS, Option, parse

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """Checked values by option ``dest`` (defaults filled in), which of them the user gave, and the
    flag each was given under. ``settings.k`` reads ``modtest_k`` (the ``modtest_`` prefix may be
    left out); ``compare_rules`` are the parsed ``--modtest-compare-fail`` rules."""

    values: Mapping[str, Any]
    explicit: frozenset = frozenset()
    flags: Mapping[str, str] = field(default_factory=dict)
    compare_rules: tuple = ()

    def __getattr__(self, name: str):
        values = self.__dict__.get("values", {})
        for dest in (name, f"modtest_{name}"):
            if dest in values:
                return values[dest]
        raise AttributeError(f"{type(self).__name__!s} has no setting {name!r}")

    def __getitem__(self, dest: str):
        return self.values[dest]

    def flag(self, dest: str) -> str:
        """The flag ``dest`` is given under in the interface these settings came from."""
        return self.flags.get(dest) or BY_DEST[dest].flag or dest

    def given(self, dest: str) -> bool:
        return dest in self.explicit

    # ------------------------------------------------------------------ the two doors
    @classmethod
    def from_values(cls, raw: Mapping[str, Any], *, options: Iterable[Option] = OPTIONS,
                    flag_of: Callable[[Option], str | None] = lambda o: o.flag,
                    explicit: Iterable[str] | None = None) -> Settings:
        """Parse and check ``raw`` (``dest -> raw value``, None: not given) for ``options``; a bad
        value raises :class:`InvalidInput` (one line naming ``flag_of(option)``). ``explicit``: the
        options the user gave (default: those whose raw value is not None)."""
        options = tuple(options)
        flags = {o.dest: flag_of(o) or o.flag or o.dest for o in options}
        values = {o.dest: parse(o, raw.get(o.dest), flags[o.dest]) for o in options}
        rules = _check_together(values, flags)
        given = {d for d, v in raw.items() if v is not None} if explicit is None else set(explicit)
        return cls(values, frozenset(given), flags, rules)

    @classmethod
    def from_args(cls, args, dests: Iterable[str]) -> Settings:
        """The ``modtest`` command's settings ``dests`` from its argparse namespace (messages name the
        command's own flags: ``--k``, ``--trust-model``)."""
        options = [BY_DEST[d] for d in dests]
        return cls.from_values({o.dest: getattr(args, o.dest, None) for o in options}, options=options,
                               flag_of=lambda o: o.cli or o.flag)

    @classmethod
    def from_pytest(cls, config, options: Iterable[Option] = OPTIONS) -> Settings:
        """A pytest session's settings: the command line wins over the ini key; relative paths are
        taken from the current folder (command line) or the rootdir (ini file)."""
        options = tuple(options)
        raw, explicit = {}, set()
        for o in options:
            value, given, cmdline = raw_option(config, o.dest, o.kind)
            if o.kind == "path" and value is not None and str(value).strip().lower() != "none":
                path = Path(str(value)).expanduser()
                if not path.is_absolute():
                    path = (Path.cwd() if cmdline else config.rootpath) / path
                value = str(path)
            raw[o.dest] = value
            if given:
                explicit.add(o.dest)
        return cls.from_values(raw, options=options, explicit=explicit)


def raw_option(config, dest: str, kind: str):
    """(value, explicit, from_cmdline) of a pytest option: the command line wins over the ini key."""
    v = config.getoption(dest, default=None)
    if v is not None:
        return v, True, True
    try:
        iv = config.getini(dest)
    except (ValueError, KeyError):
        iv = None
    if kind == "bool":
        return bool(iv), bool(iv), False
    if iv not in (None, "", []):
        return iv, True, False
    return None, False, False


def _check_together(values: dict, flags: Mapping[str, str]) -> tuple:
    """The checks that need more than one value (or a parser owned elsewhere); returns the parsed
    compare rules."""
    if values.get("modtest_protocol") == "robust" and "modtest_ensemble" in values:
        from modtest.robust import ensemble_quorum

        try:
            ensemble_quorum(values["modtest_ensemble"])
        except ModtestError as exc:
            raise InvalidInput(f"{flags['modtest_ensemble']}: {exc}") from None
    if values.get("modtest_save") is not None:
        from modtest.report.storage import check_name

        try:
            values["modtest_save"] = check_name(values["modtest_save"])
        except ModtestError as exc:
            raise InvalidInput(f"{flags['modtest_save']}: {exc}") from None
    if "modtest_compare_fail" not in values:
        return ()
    from modtest.report.compare import parse_rules

    try:  # no rules given: the recommended noise-aware defaults
        return tuple(parse_rules(values["modtest_compare_fail"]))
    except ModtestError as exc:
        raise InvalidInput(f"{flags['modtest_compare_fail']}: {exc}") from None
