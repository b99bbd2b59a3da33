"""Black-box controls for rule recovery: they query the network and never read its weights.

- ``grammar_search``: every rule of the family's grammar, keeping the one most consistent with the
  network's answers (:mod:`eis.tools.rule_recovery.search`); a strong automated baseline.
- ``distill_tree``, ``distill_knn``, ``distill_logistic``: scikit-learn models fitted to the network's
  answers on the queries (pixels for images; (x, y) for trees and neighbours on tokens, one-hot x and y
  for the logistic regression). They copy the network, errors included, so they should score well on
  agreement with the network and poorly where the network is wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from eis.tools.base import register_tool
from eis.tools.rule_recovery.base import RuleAnswer, RuleTask, RuleTool
from eis.tools.rule_recovery.search import search_image, search_token


@register_tool
class GrammarSearch(RuleTool):
    """The rule of the family's grammar that agrees best with the network on the queries."""

    name = "grammar_search"
    control = True
    summary = "enumerate the family's rules; keep the one most consistent with the network's answers"

    def solve(self, task: RuleTask) -> RuleAnswer:
        x = task.queries()
        labels = task.answers(x)
        if task.kind == "image":
            rule, _ = search_image(task.family, x, labels, task.meta["dataset"])
        else:
            rule, _ = search_token(task.family, x, labels, int(task.meta["p"]))
        return RuleAnswer.of_rule(rule)


def features(task: RuleTask, x: torch.Tensor, one_hot: bool = False) -> np.ndarray:
    """Inputs as a feature matrix: flattened pixels, (x, y), or one-hot x and y (``one_hot``)."""
    if task.kind == "image":
        return x.flatten(1).double().numpy()
    if not one_hot:
        return x.double().numpy()
    p = int(task.meta["p"])
    out = np.zeros((len(x), 2 * p))
    out[np.arange(len(x)), x[:, 0].numpy()] = 1
    out[np.arange(len(x)), p + x[:, 1].numpy()] = 1
    return out


def _rounded(a: np.ndarray) -> Any:
    return np.round(np.asarray(a, dtype=np.float64), 4).tolist()


class _Distill(RuleTool):
    one_hot: ClassVar[bool] = False

    def estimator(self) -> Any:
        raise NotImplementedError

    def describe(self, est: Any, x: np.ndarray, y: np.ndarray) -> Any:
        raise NotImplementedError

    def solve(self, task: RuleTask) -> RuleAnswer:
        q = task.queries()
        x, y = features(task, q, self.one_hot), task.answers(q).numpy().astype(int)
        if len(np.unique(y)) == 1:  # the network answers one label everywhere: so does the copy
            label = bool(y[0])
            return RuleAnswer(lambda z: torch.full((len(z),), label), {"constant": label})
        est = self.estimator().fit(x, y)
        return RuleAnswer(
            lambda z: torch.from_numpy(est.predict(features(task, z, self.one_hot)).astype(bool)),
            self.describe(est, x, y),
        )


@register_tool
class DistillTree(_Distill):
    """A decision tree fitted to the network's answers (scikit-learn CART, grown until pure)."""

    name = "distill_tree"
    control = True
    summary = "decision tree distilled from the network's answers"
    max_depth: int | None = None
    seed: int = 0

    def estimator(self) -> Any:
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(max_depth=self.max_depth, random_state=self.seed)

    def describe(self, est: Any, x: np.ndarray, y: np.ndarray) -> Any:
        t = est.tree_
        return {
            "left": t.children_left.tolist(),
            "right": t.children_right.tolist(),
            "feature": t.feature.tolist(),
            "threshold": _rounded(t.threshold),
            "label": t.value[:, 0].argmax(1).tolist(),
        }


@register_tool
class DistillKNN(_Distill):
    """k nearest neighbours (Euclidean) over the queries, labelled by the network."""

    name = "distill_knn"
    control = True
    summary = "k-nearest-neighbour vote over the network's answers"
    k: int = 5

    def estimator(self) -> Any:
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=self.k)

    def describe(self, est: Any, x: np.ndarray, y: np.ndarray) -> Any:
        return {"k": self.k, "points": _rounded(x), "labels": y.tolist()}


@register_tool
class DistillLogistic(_Distill):
    """L2-regularised logistic regression on the network's answers."""

    name = "distill_logistic"
    control = True
    summary = "logistic regression distilled from the network's answers"
    one_hot: ClassVar[bool] = True
    c: float = 1.0

    def estimator(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.c, max_iter=2000)

    def describe(self, est: Any, x: np.ndarray, y: np.ndarray) -> Any:
        return {"coef": _rounded(est.coef_[0]), "intercept": round(float(est.intercept_[0]), 4)}
