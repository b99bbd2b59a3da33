"""The Casper et al. (2023) protocol on one tier: attribution maps of patch-trojaned inputs scored against the
trigger mask, beside the paper's numbers.

:func:`casper_table` puts the localize track's verdicts on a tier's patch trojans next to ``CASPER_2023``:
Pearson correlation with the trigger mask judged against the edge detector (the paper's final metric) and
L1 distance judged against the blank map (its first version's metric). Means, CIs and verdicts come from
the track's own summary (two-stage bootstrap, paired differences; see ``eis.tracks.localize``).
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from eis.report.transfer import REALISTIC, with_tiers


@dataclasses.dataclass(frozen=True)
class PaperAnchors:
    """Published numbers to set beside ours; ``pearson``: tool -> (ResNet50, VGG19)."""

    citation: str
    pearson: dict[str, tuple[float, float]]
    pearson_about_zero: tuple[str, ...]
    l1_beats_blank: tuple[str, ...]
    l1_worst: str


CASPER_2023 = PaperAnchors(
    citation=(
        'Casper et al. 2023, "Red Teaming Deep Neural Networks with Feature Synthesis Tools", NeurIPS 2023: '
        "ImageNet ResNet50 and VGG19, 12 trojans (4 patch, 4 style, 4 natural), 100 triggered inputs per "
        "patch trojan; final metric Pearson correlation of map and trigger mask, first version's metric L1 "
        "distance to the mask against an all-zero blank map"
    ),
    pearson={
        "kernel_shap": (0.81, 0.81),
        "gradient_shap": (0.27, 0.43),
        "edge_detector": (0.22, 0.23),
        "occlusion": (0.20, 0.19),
    },
    pearson_about_zero=(
        "saliency",
        "integrated_gradients",
        "input_x_gradient",
        "deeplift",
        "guided_backprop",
        "deconvolution",
    ),
    l1_beats_blank=("occlusion",),  # "only occlusion beat the blank map"
    l1_worst="edge_detector",  # "the edge detector was worst"
)

CASPER_COLUMNS = [
    "tool", "control", "n", "pearson", "pearson_lo", "pearson_hi", "l1_distance", "l1_lo", "l1_hi",
    "vs_edge_detector", "vs_blank_map", "paper_pearson_resnet50", "paper_pearson_vgg19", "paper_pearson",
    "paper_l1",
]  # fmt: skip


def casper_table(
    rows: pd.DataFrame, tier: str = REALISTIC, *, flaw: str = "patch", n_resamples: int = 1000
) -> pd.DataFrame:
    """Per attribution tool on ``tier``'s ``flaw`` trojans (localize track): Pearson and L1 distance with
    their CIs and verdicts (vs the edge detector, vs the blank map) from the track's own summary, beside
    the numbers of ``CASPER_2023``. Sorted by Pearson, best first; empty when there is no such cell."""
    from eis.tracks.localize import LocalizeTrack

    rows = with_tiers(rows)
    if rows.empty:
        return pd.DataFrame(columns=CASPER_COLUMNS)
    sub = rows[(rows["track"] == "localize") & (rows["tier"] == tier) & (rows["flaw"].astype(str) == flaw)]
    if sub.empty:
        return pd.DataFrame(columns=CASPER_COLUMNS)
    long = LocalizeTrack(n_resamples=n_resamples).summarize(sub.reset_index(drop=True))
    pooled = long[long["flaw"] == "all"].set_index(["tool", "metric"])
    out = []
    for tool in dict.fromkeys(long["tool"]):
        p, d = pooled.loc[(tool, "pearson")], pooled.loc[(tool, "l1_distance")]
        paper = CASPER_2023.pearson.get(str(tool), (math.nan, math.nan))
        out.append(
            {
                "tool": tool,
                "control": bool(p["control"]),
                "n": int(p["n"]),
                "pearson": p["mean"],
                "pearson_lo": p["lo"],
                "pearson_hi": p["hi"],
                "l1_distance": d["mean"],
                "l1_lo": d["lo"],
                "l1_hi": d["hi"],
                "vs_edge_detector": _answer(p["verdict"]),
                "vs_blank_map": _answer(d["verdict"]),
                "paper_pearson_resnet50": paper[0],
                "paper_pearson_vgg19": paper[1],
                "paper_pearson": _paper_pearson(str(tool)),
                "paper_l1": _paper_l1(str(tool)),
            }
        )
    return pd.DataFrame(out, columns=CASPER_COLUMNS)


def _answer(text: str) -> str:
    """ "beats the edge detector: yes (pearson ...)" -> "yes"; "control" stays."""
    return str(text).split(": ", 1)[-1].split(" (", 1)[0]


def _paper_pearson(tool: str) -> str:
    if tool in CASPER_2023.pearson:
        resnet, vgg = CASPER_2023.pearson[tool]
        return f"{resnet:.2f} / {vgg:.2f}"
    return "about 0" if tool in CASPER_2023.pearson_about_zero else ""


def _paper_l1(tool: str) -> str:
    if tool in CASPER_2023.l1_beats_blank:
        return "beat the blank map"
    if tool == CASPER_2023.l1_worst:
        return "did not (worst)"
    known = set(CASPER_2023.pearson) | set(CASPER_2023.pearson_about_zero)
    return "did not" if tool in known else ""
