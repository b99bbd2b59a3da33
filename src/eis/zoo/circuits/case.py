"""A built circuit case: the model, clean and corrupted token sequences openly; the circuit behind a call."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch

from eis.errors import EisError
from eis.zoo import artifact
from eis.zoo.case import Case, default_device
from eis.zoo.circuits.model import HookedTransformer, ModelConfig
from eis.zoo.circuits.programs import sample_tokens
from eis.zoo.circuits.truth import answer_mask


@dataclasses.dataclass(frozen=True)
class CircuitTruth:
    """The sealed truth of a circuit case: which components and edges matter under ``ablation``.

    ``structural_*`` are read from the compiled weights (before any variant); ``nodes``/``edges`` are the
    subset confirmed by ablating each alone, the set tracks score against.
    """

    ablation: str
    nodes: frozenset[str]
    edges: frozenset[tuple[str, str]]
    structural_nodes: frozenset[str]
    structural_edges: frozenset[tuple[str, str]]
    spec: dict[str, Any]
    measured: dict[str, float]

    @property
    def kind(self) -> str:
        return "circuit"


class CircuitCase(Case):
    """A compiled transformer. ``model()``, ``inputs()``, ``corrupted()`` and ``meta`` are what a tool may
    see (the program's name, shape, ablation type and answer positions included); ``truth()`` is sealed."""

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(**self.meta["model_config"])

    @property
    def ablation(self) -> str:
        return self.meta["ablation"]

    def describe(self) -> list[tuple[str, Any]]:
        """Its spec and the size of its circuit (no image grid)."""
        truth = self.truth()
        keys = ("name", "id", "arch", "ablation", "variant", "seed", "model_config")
        size = f"{len(truth.nodes)} components, {len(truth.edges)} edges"
        return [*((k, self.meta.get(k)) for k in keys), ("circuit", size)]

    def model(self, device: str | torch.device | None = None) -> HookedTransformer:
        model = HookedTransformer(self.config)
        model.load_state_dict(artifact.load_weights(self.root))
        return model.eval().to(device or default_device())

    def inputs(self, n: int | None = None, *, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Clean token sequences (N, n_ctx) and the program's outputs (N, n_ctx), -1 where undefined.

        A circuit case has one input set: ``split`` must be ``test``.
        """
        if split != "test":
            raise EisError(f"circuit cases have one input set; split must be 'test', got {split!r}")
        tokens = self._tokens(self.meta["seed"] * 2)[0][:n]
        model = self.model("cpu")
        with torch.no_grad():
            labels = model(tokens).argmax(-1)
        mask = answer_mask(tokens, self.config.pad_id, self.meta["first_answer"])
        return tokens, torch.where(mask, labels, torch.full_like(labels, -1))

    def corrupted(self, n: int | None = None) -> torch.Tensor:
        """Corrupted sequences paired with ``inputs()``: fresh tokens, the same lengths."""
        _, lengths = self._tokens(self.meta["seed"] * 2)
        return self._tokens(self.meta["seed"] * 2 + 1, lengths)[0][:n]

    def _tokens(self, seed: int, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.meta
        return sample_tokens(
            m["vocab_ids"], self.config, m["n_inputs"], seed, distinct=m["distinct"], lengths=lengths
        )

    def truth(self) -> CircuitTruth:  # type: ignore[override]
        return _read_truth(self.root)


@functools.cache
def _read_truth(root: Path) -> CircuitTruth:
    info, _ = artifact.load_truth(root)
    return CircuitTruth(
        info["ablation"],
        frozenset(info["nodes"]),
        frozenset(tuple(e) for e in info["edges"]),
        frozenset(info["structural_nodes"]),
        frozenset(tuple(e) for e in info["structural_edges"]),
        info["spec"],
        info["measured"],
    )
