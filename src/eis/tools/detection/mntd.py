"""MNTD-style meta neural trojan detection (Xu et al., S&P 2021), trained on a given model population.

A set of ``n_queries`` query images (learned, kept in [0, 1] by a sigmoid) is fed to every model; the
concatenated softmax outputs (n_queries x K) go to a small MLP meta-classifier whose sigmoid output is the
probability that the model is trojaned. Queries and classifier are trained jointly ("query tuning") with
binary cross-entropy on a training population of clean and trojaned models. The paper trains on shadow
models it makes itself ("jumbo learning"); here the training population plays that role, which makes
this detector as good as that population is representative of what it is asked about.

Models of one architecture are evaluated together with ``torch.func.vmap`` over their stacked weights
(one batched call per step); differing architectures fall back to a loop.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from eis.errors import EisError
from eis.tools.base import register_tool
from eis.tools.detection.base import Detection, DetectionTool, check_population, model_device


def population_outputs(models: Sequence[nn.Module], queries: torch.Tensor) -> torch.Tensor:
    """Softmax outputs of every model on ``queries``: (n_models, n_queries, K), differentiable in queries."""
    try:
        params, buffers = stack_module_state(list(models))
        params = {k: v.detach() for k, v in params.items()}
        base = copy.deepcopy(models[0]).to("meta")

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], q: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (q,))

        logits = vmap(one, in_dims=(0, 0, None))(params, buffers, queries)
    except (RuntimeError, ValueError):  # differing architectures or an op vmap cannot batch
        logits = torch.stack([m(queries) for m in models])
    return torch.softmax(logits.float(), dim=-1)


@register_tool
class Mntd(DetectionTool):
    """MNTD: learned query inputs + meta-classifier on the model's outputs, fitted on a population."""

    name: ClassVar[str] = "mntd"
    summary: ClassVar[str] = "meta-classifier on outputs to learned queries, trained on a model population"
    learned: ClassVar[bool] = True

    n_queries: int = 10
    hidden: int = 20
    steps: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        self._state: dict[str, torch.Tensor] | None = None
        self._meta: dict[str, Any] = {}

    def _forward(self, probs: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
        h = torch.relu(probs.flatten(1) @ st["w1"].T + st["b1"])
        return (h @ st["w2"].T + st["b2"]).squeeze(1)

    def fit(
        self,
        models: Sequence[nn.Module],
        labels: Sequence[int],
        clean_x: torch.Tensor,
        clean_y: torch.Tensor,
        num_classes: int,
    ) -> None:
        check_population(labels)
        if len(models) != len(labels):
            raise EisError(f"fit got {len(models)} models but {len(labels)} labels")
        dev = model_device(models[0])
        c, h, w = clean_x.shape[1:]
        gen = torch.Generator().manual_seed(self.seed)
        q_param = torch.randn(self.n_queries, c, h, w, generator=gen)
        d_in = self.n_queries * num_classes
        st = {
            "w1": torch.randn(self.hidden, d_in, generator=gen) / d_in**0.5,
            "b1": torch.zeros(self.hidden),
            "w2": torch.randn(1, self.hidden, generator=gen) / self.hidden**0.5,
            "b2": torch.zeros(1),
        }
        st = {k: v.to(dev).requires_grad_(True) for k, v in st.items()}
        q_param = q_param.to(dev).requires_grad_(True)
        y = torch.tensor([float(v) for v in labels], device=dev)
        opt = torch.optim.Adam([q_param, *st.values()], lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.steps):
            probs = population_outputs(models, torch.sigmoid(q_param))
            loss = F.binary_cross_entropy_with_logits(self._forward(probs, st), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self._state = {k: v.detach().cpu() for k, v in st.items()}
        self._state["queries"] = torch.sigmoid(q_param).detach().cpu()
        self._meta = {"num_classes": num_classes, "train_loss": float(loss.detach())}

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if self._state is None:
            raise EisError("mntd has not been fitted; call fit() on a training population first")
        return dict(self._state), dict(self._meta)

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        missing = {"w1", "b1", "w2", "b2", "queries"} - set(tensors)
        if missing:
            raise EisError(f"mntd state is missing {sorted(missing)}")
        self._state = {k: v.detach().cpu() for k, v in tensors.items()}
        self._meta = dict(meta)

    def inspect(
        self, model: nn.Module, clean_x: torch.Tensor, clean_y: torch.Tensor, num_classes: int
    ) -> Detection:
        if self._state is None:
            raise EisError("mntd has not been fitted; call fit() on a training population first")
        if num_classes != self._meta.get("num_classes"):
            raise EisError(
                f"mntd was fitted on {self._meta.get('num_classes')}-class models; got {num_classes}"
            )
        dev = model_device(model)
        st = {k: v.to(dev) for k, v in self._state.items()}
        with torch.no_grad():
            probs = torch.softmax(model(st["queries"]).float(), dim=1)[None]
            logit = float(self._forward(probs, st)[0])
        return Detection(score=float(torch.sigmoid(torch.tensor(logit))), details={"logit": logit})
