"""The paper's lesion taxonomy (section 3.2, A.9): category names, what they mean, their colours.

One place for them: the statistics assign them, comparisons count them, figures colour them.
"""

IMPORTANT = "important"
SIG_NOT_DIFF = "sig-but-not-diff"
DIFF_NOT_SIG = "diff-but-not-sig"
PRUNABLE = "prunable"
COMPLETE = "complete"
SMALL = "small"
OTHER = "other"
CATEGORIES = (IMPORTANT, SIG_NOT_DIFF, DIFF_NOT_SIG, PRUNABLE, COMPLETE, SMALL, OTHER)

#: one colour per category (matplotlib's tab10 order), used by every figure
COLORS = {
    IMPORTANT: "#d62728", SIG_NOT_DIFF: "#ff7f0e", DIFF_NOT_SIG: "#9467bd",
    PRUNABLE: "#2ca02c", COMPLETE: "#8c564b", SMALL: "#7f7f7f", OTHER: "#1f77b4",
}

READINGS = {
    IMPORTANT: "beats every random control and drops accuracy by more than 1 point",
    SIG_NOT_DIFF: "beats every random control, but drops accuracy by at most 1 point",
    DIFF_NOT_SIG: "drops accuracy by more than 1 point, but some random control does as much",
    PRUNABLE: "hurts less than every random control, and less than 1 point",
    COMPLETE: "the whole layer",
    SMALL: "under 5% of its layer",
    OTHER: "none of the above",
}
