"""The ``challenge`` track: recover a secret labelling rule from the network that learned it (EIS VII).

Asked of the zoo's rule cases. A solver gets a :class:`~eis.tools.rule_recovery.RuleTask` (the network,
its training inputs without labels, the rule family) and returns a labelling function. Scores, each the
share of inputs on which the returned labels agree with a reference:

- ``agree_rule``: with the true rule on fresh in-distribution inputs (never trained on);
- ``agree_rule_net_wrong``: with the true rule on the fresh inputs where the network itself disagrees
  with the rule. A solver that copies the network scores near 0 here, one that recovered the rule near 1;
- ``agree_rule_off``: with the true rule off the training distribution (image rules: blends and overlays
  of two test images; token grids have none);
- ``agree_net``: with the network on the fresh inputs;
- ``description_bytes``: the length of the answer's JSON description (a grammar rule: tens of bytes; a
  k-NN copy: every query point).

Headline: ``agree_rule``, with bootstrap confidence intervals over rules (one value per case); rows per
rule family. The verdict compares each white-box solver with the best control on it, paired by case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pandas as pd
import torch

from eis.errors import EisError
from eis.tools.rule_recovery.base import RuleAnswer, RuleTask, RuleTool
from eis.tracks.base import CellResult, Track, jsonable, register_track
from eis.tracks.circuits import CircuitsTrack
from eis.tracks.sanity import long_table
from eis.zoo.kinds import kind_of
from eis.zoo.rules.grammar import evaluate
from eis.zoo.rules.models import network_labels

if TYPE_CHECKING:
    from eis.tools.base import Tool
    from eis.zoo.case import Case


def task_of(case: Case) -> RuleTask:
    """What a solver may see of a rule case (no rule, no labels)."""
    meta = {"dataset": case.meta["dataset"]} if case.kind == "image" else {"p": int(case.meta["p"])}  # type: ignore[attr-defined]
    return RuleTask(case.model(), case.kind, case.family, case.train_inputs(), meta)  # type: ignore[attr-defined]


def _share(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).double().mean()) if len(a) else float("nan")


def score_labels(case: Case, fresh: torch.Tensor, off: torch.Tensor | None = None) -> dict[str, float]:
    """The track's scores (see the module docstring) of labels given to the case's fresh inputs and, for
    image rules, its off-distribution inputs; ``network_*`` and ``n_net_wrong`` describe the case."""
    rule = case.truth().rule  # type: ignore[attr-defined]
    model = case.model()
    x = case.fresh_inputs()  # type: ignore[attr-defined]
    truth, net = evaluate(rule, x), network_labels(model, x)
    if fresh.shape != truth.shape:
        raise EisError(f"expected {len(truth)} labels for the fresh inputs, got shape {tuple(fresh.shape)}")
    fresh = fresh.bool().cpu()
    wrong = truth != net
    scores = {
        "agree_rule": _share(fresh, truth),
        "agree_net": _share(fresh, net),
        "network_agree_rule": _share(net, truth),
        "n_net_wrong": float(wrong.sum()),
    }
    if wrong.any():
        scores["agree_rule_net_wrong"] = _share(fresh[wrong], truth[wrong])
    x_off = case.off_inputs()  # type: ignore[attr-defined]
    if x_off is not None:
        if off is None or off.shape != (len(x_off),):
            raise EisError(f"expected {len(x_off)} labels for the off-distribution inputs")
        truth_off = evaluate(rule, x_off)
        scores["agree_rule_off"] = _share(off.bool().cpu(), truth_off)
        scores["network_agree_rule_off"] = _share(network_labels(model, x_off), truth_off)
    return scores


def score_labeller(case: Case, labeller: RuleAnswer) -> dict[str, float]:
    """:func:`score_labels` of a solver's labelling function."""
    off = case.off_inputs()  # type: ignore[attr-defined]
    return score_labels(case, labeller(case.fresh_inputs()), None if off is None else labeller(off))  # type: ignore[attr-defined]


@register_track
class ChallengeTrack(Track):
    """Secret-rule recovery scored against the rule, where the network is wrong, and off distribution."""

    name: ClassVar[str] = "challenge"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "rule_recovery"
    headline: ClassVar[str] = "agree_rule"
    summary: ClassVar[str] = "agreement with the secret rule (fresh, network-wrong, off-distribution inputs)"
    n_resamples: int = 1000

    def applies_to(self, case: Case) -> bool:
        return kind_of(case) == "rule"

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        if not isinstance(tool, RuleTool):
            raise EisError(
                f"challenge runs rule_recovery tools; {tool.name!r} is a {tool.family or 'other'} tool"
            )
        answer = tool.recover(task_of(case))
        scores = score_labeller(case, answer)
        scores["description_bytes"] = float(answer.description_bytes)
        context = {k: scores.pop(k) for k in list(scores) if k.startswith(("network_", "n_"))}
        extras = {"rule": jsonable(answer.rule), **context}
        return CellResult(scores=scores, flaw=f"{case.kind}/{case.family}", extras=extras)  # type: ignore[attr-defined]

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        return long_table(rows, self.name, self.headline, self._verdict)

    _verdict = CircuitsTrack._verdict  # white-box solver vs the best control on the headline, paired by case
