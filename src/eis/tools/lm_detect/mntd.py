"""MNTD for language models: a meta-classifier on a model's outputs to fixed query prompts.

MNTD (Xu et al., S&P 2021) feeds query inputs to every model of a training population and fits a
meta-classifier on the concatenated outputs. For a causal LM the queries are ``n_queries`` prompts of
``query_tokens`` tokens drawn once from the allowed tokens (seeded; the same for every model of one
vocabulary) and the features are the next-token log-probabilities after each query, over the whole
vocabulary (``n_queries x V`` numbers, the LM's "softmax outputs"). The meta-classifier is a logistic
regression on standardised features. MNTD also tunes its queries by gradient; discrete prompts would need
a relaxation to do so, so these queries stay fixed (MNTD's variant without query tuning).

The features are in token-id space, so the detector applies to models of the vocabulary it was fitted on
(a population sharing one language, as the zoo's do); another vocabulary size is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from eis.errors import EisError, ToolRefusal
from eis.tools.base import register_tool
from eis.tools.detection.base import check_population
from eis.tools.lm_detect.base import LMDetection, LMDetectionTool, LMDetectTask, not_fitted


def query_outputs(task: LMDetectTask, queries: torch.Tensor) -> torch.Tensor:
    """(n_queries * V,) next-token log-probabilities after ``[BOS] + query`` for each query (Q, L)."""
    prefix = torch.tensor(task.prefix, dtype=torch.long).expand(len(queries), -1)
    ids = torch.cat([prefix, queries], 1)
    with torch.no_grad():
        logits = task.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
    return logits.float().log_softmax(-1).flatten().double()


@register_tool
class LMMntd(LMDetectionTool):
    """MNTD for LMs: logistic regression on next-token distributions after fixed query prompts."""

    name: ClassVar[str] = "lm_mntd"
    summary: ClassVar[str] = "meta-classifier on next-token distributions after fixed query prompts (MNTD)"
    learned: ClassVar[bool] = True

    n_queries: int = 32
    query_tokens: int = 3
    c: float = 0.1  # inverse L2 regularisation strength of the logistic regression
    seed: int = 0

    def __post_init__(self) -> None:
        self._state: dict[str, torch.Tensor] | None = None
        self._meta: dict[str, Any] = {}

    def fit(self, tasks: Sequence[LMDetectTask], labels: Sequence[int]) -> None:
        check_population(labels)
        if len(tasks) != len(labels):
            raise EisError(f"fit got {len(tasks)} models but {len(labels)} labels")
        if self.n_queries < 1 or self.query_tokens < 1:
            raise EisError(f"lm_mntd needs n_queries >= 1 and query_tokens >= 1; got {self.n_queries}, "
                           f"{self.query_tokens}")  # fmt: skip
        for t in tasks:
            t.check()
        sizes = {t.vocab_size for t in tasks}
        if len(sizes) > 1:
            raise EisError(
                f"lm_mntd fits on models of one vocabulary; the population has sizes {sorted(sizes)}"
            )
        allowed = tasks[0].allowed()
        gen = torch.Generator().manual_seed(self.seed)
        queries = allowed[torch.randint(len(allowed), (self.n_queries, self.query_tokens), generator=gen)]
        feats = torch.stack([query_outputs(t, queries) for t in tasks]).numpy()
        mean, scale = feats.mean(0), feats.std(0)
        scale[scale == 0] = 1.0
        lr = LogisticRegression(C=self.c, max_iter=5000)
        lr.fit((feats - mean) / scale, np.asarray(labels, dtype=int))
        self._state = {
            "queries": queries,
            "mean": torch.from_numpy(mean),
            "scale": torch.from_numpy(scale),
            "coef": torch.from_numpy(lr.coef_[0].astype(np.float64)),
            "intercept": torch.tensor([float(lr.intercept_[0])], dtype=torch.float64),
        }
        self._meta = {"vocab_size": sizes.pop(), "n_train": len(tasks)}

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if self._state is None:
            raise not_fitted(self.name)
        return dict(self._state), dict(self._meta)

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        missing = {"queries", "mean", "scale", "coef", "intercept"} - set(tensors)
        if missing:
            raise EisError(f"lm_mntd state is missing {sorted(missing)}")
        self._state = {k: v.cpu() for k, v in tensors.items()}
        self._meta = dict(meta)

    def inspect(self, task: LMDetectTask) -> LMDetection:
        if self._state is None:
            raise not_fitted(self.name)
        if task.vocab_size != self._meta.get("vocab_size"):
            raise ToolRefusal(
                f"lm_mntd was fitted on models of {self._meta.get('vocab_size')} tokens; this one has "
                f"{task.vocab_size}"
            )
        st = self._state
        f = query_outputs(task, st["queries"].long())
        logit = float(((f - st["mean"]) / st["scale"]) @ st["coef"] + st["intercept"][0])
        return LMDetection(score=1 / (1 + math.exp(-max(min(logit, 700), -700))), details={"logit": logit})
