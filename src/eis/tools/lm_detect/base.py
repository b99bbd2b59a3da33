"""The language-model detection contract: given a causal LM, is it backdoored, and what does it emit?

A family of its own rather than the image ``detection`` family extended: an image detector receives
clean input tensors and a class count, and names a target class and a trigger stamped on pixels; an LM
detector receives a tokenizer, clean texts and candidate target words, and names a target *string*. The
two share no input or output, so one base class for both would branch on the kind everywhere; the
weight-statistics and random controls reuse the image family's code (:mod:`eis.tools.lm_detect.controls`).

A tool receives an :class:`LMDetectTask`: the model (a ``transformers`` causal LM that takes
``input_ids`` and returns ``.logits``), its tokenizer, ``candidates`` (words a planted target could start
with or hold; one token each: the language's content words for the zoo's models, the same for every model
of a language) and clean held-out ``texts``. It returns an :class:`LMDetection`: a model-level suspicion
``score`` (higher = more likely backdoored) and, where the tool names them, the suspected target (words,
its first word a candidate) and the trigger that elicits it.

Tools that learn from a population (``learned = True``) implement ``fit`` on tasks of a training population
and round-trip what they learned through ``get_state``/``set_state`` (tensors + JSON). Callers call
:meth:`LMDetectionTool.detect`, which checks the task and the answer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from eis.errors import EisError
from eis.tools.base import Tool
from eis.tools.lm_queries import allowed_tokens


@dataclasses.dataclass
class LMDetectTask:
    """What an LM detection tool receives (see the module docstring)."""

    model: nn.Module
    tokenizer: Any
    candidates: list[str]
    texts: list[str] = dataclasses.field(default_factory=list)
    batch_size: int = 2048

    def check(self) -> None:
        """Raise EisError (one line) on a malformed task."""
        if not self.candidates or not all(isinstance(c, str) and c.strip() for c in self.candidates):
            raise EisError("an lm_detect task needs a non-empty list of candidate target words")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise EisError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        n = self.vocab_size
        for word in self.candidates:
            ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or ids[0] == unk or ids[0] >= n:
                raise EisError(f"candidate {word!r} is not one token of the model's vocabulary")
        if self.model.training:
            raise EisError("the model is in train mode; call model.eval() first")

    @property
    def vocab_size(self) -> int:
        """Token ids both the model's embedding and the tokenizer know."""
        return min(int(self.model.get_input_embeddings().weight.shape[0]), len(self.tokenizer))

    @property
    def prefix(self) -> list[int]:
        """What every prompt starts with: ``[BOS]`` where the tokenizer has one."""
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return [] if bos is None else [int(bos)]

    def candidate_ids(self) -> torch.Tensor:
        """(C,) the candidates' token ids."""
        return torch.tensor(
            [self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in self.candidates]
        )

    def allowed(self) -> torch.Tensor:
        """(K,) token ids a prompt may hold: the vocabulary less the tokenizer's special tokens."""
        return allowed_tokens(self.model, self.tokenizer)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))


@dataclasses.dataclass
class LMDetection:
    """A detector's verdict on one language model.

    score: model-level suspicion, higher = more likely backdoored.
    target: the suspected target (words separated by spaces, the first a candidate), or None.
    trigger: the prompt that elicits it (words), or None.
    details: JSON-serialisable extras (anomaly index, per-candidate statistics, ...).
    """

    score: float
    target: str | None = None
    trigger: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class LMDetectionTool(Tool):
    """Base of the ``lm_detect`` family: subclasses implement ``inspect``; callers call ``detect``."""

    family: ClassVar[str] = "lm_detect"
    learned: ClassVar[bool] = False  # needs ``fit`` on a training population before ``inspect``

    def detect(self, task: LMDetectTask) -> LMDetection:
        """Check the task, then inspect the model. Must not change the model's weights or mode."""
        task.check()
        det = self.inspect(task)
        if not isinstance(det, LMDetection):
            raise EisError(f"{self.name} returned {type(det).__name__}, not an LMDetection")
        if not math.isfinite(det.score):
            raise EisError(f"{self.name} returned a non-finite score {det.score}")
        if det.target is not None and det.target.split()[0] not in task.candidates:
            raise EisError(f"{self.name} named target {det.target!r}, which does not start with a candidate")
        return det

    def inspect(self, task: LMDetectTask) -> LMDetection:
        raise NotImplementedError

    def fit(self, tasks: Sequence[LMDetectTask], labels: Sequence[int]) -> None:
        """Learn from a training population: ``labels[i]`` is 1 if ``tasks[i].model`` is backdoored."""
        raise NotImplementedError(f"{self.name} does not learn")

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What ``fit`` learned, as (tensors, JSON metadata), for caching without pickles."""
        raise NotImplementedError(f"{self.name} has no learned state")

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""
        raise NotImplementedError(f"{self.name} has no learned state")


def not_fitted(name: str) -> EisError:
    """The one-line error of a learned tool asked before it was fitted."""
    return EisError(f"{name} learns from a training population; call fit() on one (role 'train') first")
