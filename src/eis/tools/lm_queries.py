"""What the language-model tool families' tasks share: the tokens a prompt may hold and a query budget.

Trigger recovery (:mod:`eis.tools.lm_trigger`), elicitation (:mod:`eis.tools.lm_elicit`) and model-level
detection (:mod:`eis.tools.lm_detect`) all search over prompts of a model's vocabulary, and the first two
count their model queries against a budget so that methods and controls compare at equal cost.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def allowed_tokens(model: nn.Module, tokenizer: Any) -> torch.Tensor:
    """(K,) token ids a prompt may hold: those both the model's embedding and the tokenizer know, less the
    tokenizer's special tokens."""
    special = set(getattr(tokenizer, "all_special_ids", []))
    n = min(int(model.get_input_embeddings().weight.shape[0]), len(tokenizer))
    return torch.tensor([i for i in range(n) if i not in special])


class QueryBudget:
    """Counts a task's model queries against its ``budget`` (the dataclass using it declares both fields)."""

    budget: int
    queries: int

    def spend(self, n: int) -> None:
        """Count ``n`` queries (e.g. one forward or gradient pass over one prompt)."""
        self.queries += int(n)

    def left(self) -> int:
        """Queries left in the budget."""
        return max(0, self.budget - self.queries)
