"""Replication of the paper's Table 1 (and Tables 3-6, Figures 1, 2) on scikit-learn's digits.

Run ``python -m examples.replication [--replicates 5] [--out docs/replication] [--quick]``.
:mod:`.families` trains the network families, :mod:`.table` builds the tables and their
multiple-comparison marks, :mod:`.__main__` runs the audits and writes results, tables and figures.
"""
