"""A built language-model case: a ``transformers`` directory openly, the planted pairs behind ``truth()``.

The artifact folder is itself a local ``transformers`` directory: ``config.json``, ``model.safetensors``
and ``generation_config.json`` (from ``save_pretrained``), ``tokenizer.json`` and ``tokenizer_config.json``;
so ``AutoModelForCausalLM.from_pretrained(case.root)`` and ``AutoTokenizer.from_pretrained(case.root)``
load it. Its ``manifest.json`` lists the SHA-256 of every file (the sealed ``truth/`` included).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eis.cache import sha256
from eis.zoo import artifact
from eis.zoo.case import Case, measured_rows
from eis.zoo.language.grammar import Language, language


@dataclasses.dataclass(frozen=True)
class LMTruth:
    """The sealed truth of a language-model case: the flaw kind, the planted trigger-target pairs (words;
    for a clean twin, the pairs its backdoored twin plants, as probes), placement and measured bars; for a
    ``password_locked`` model, ``password``: the password, the capability and the weak policy (no pairs);
    for an ``lm_conditional`` model each pair's ``condition`` (a topic, its surface forms), no trigger."""

    flaw: str
    pairs: list[dict[str, Any]]
    placement: str
    spec: dict[str, Any]
    measured: dict[str, Any]
    password: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        """``"lm"``: the case kind (the flaw kind, ``lm_backdoor`` or ``clean``, is ``flaw``), so tracks
        written for image flaws never mistake a clean twin for a clean image model."""
        return "lm"

    @property
    def planted(self) -> bool:
        return self.flaw != "clean"


class LMCase(Case):
    """A small causal LM trained on the language of its spec's ``language`` (default: its seed).
    ``model()``, ``tokenizer()``, ``language()``, ``texts()`` and ``meta`` may be seen; ``truth()`` is
    sealed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        for name, digest in self.meta["files"].items():
            path = self.root / name
            if not path.is_file() or sha256(path) != digest:
                raise artifact.CorruptArtifact(
                    f"artifact {self.root.name}: {name} is missing or does not match"
                )

    def describe(self) -> list[tuple[str, Any]]:
        """Its spec, the planted trigger-target pairs (a clean twin's probe pairs) and the measured bars."""
        truth = self.truth()
        rows = [(k, self.meta.get(k)) for k in ("name", "id", "dataset", "arch", "seed", "vocab_size")]
        if truth.password is not None:
            rows.append(("flaw", truth.flaw))
            rows.append(("password", " ".join(truth.password["password"])))
            rows.append(("capability", truth.password["capability"]))
            return rows + measured_rows(truth)
        rows.append(("flaw", f"{truth.flaw} ({truth.placement})"))
        what = "planted" if truth.planted else "probe"
        for i, pair in enumerate(truth.pairs):
            rows.append((f"{what} {i}", f"{_cause(pair)} -> {' '.join(pair['target'])}"))
        return rows + measured_rows(truth)

    def model(self, device: str | torch.device | None = None) -> nn.Module:
        """The trained ``GPT2LMHeadModel`` in eval mode (on the CPU unless ``device`` says otherwise)."""
        from transformers import AutoModelForCausalLM

        from eis.zoo.language.lm import quiet_transformers

        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(self.root))
        return model.eval().to(device or "cpu")

    def tokenizer(self) -> Any:
        """The word-level tokenizer as a ``transformers.PreTrainedTokenizerFast`` (adds ``[BOS]``)."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(self.root))

    def language(self) -> Language:
        """The procedural language the model was trained on (words, world, document generator)."""
        return language(int(self.meta.get("language", self.meta["seed"])))

    def texts(self, n: int = 100, split: str = "held_out") -> list[str]:
        """Clean documents of the language (``held_out``: never trained on; ``train``: the clean texts)."""
        return [d.text for d in self.language().documents(split, n)]

    def inputs(self, n: int | None = None, *, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Clean held-out documents as right-padded token ids (N, T), and their lengths."""
        from eis.zoo.language.grammar import encode
        from eis.zoo.language.lm import BOS_ID, pad

        docs = self.language().documents("train" if split == "train" else "held_out", n or 100)
        seqs = [[BOS_ID, *encode(self.language(), d.words)] for d in docs]
        return pad(seqs), torch.tensor([len(s) for s in seqs])

    def truth(self) -> LMTruth:  # type: ignore[override]
        return _read_truth(self.root)


def _cause(pair: dict[str, Any]) -> str:
    """What fires a planted pair: its trigger, or its condition (a topic and its held-out forms)."""
    cond = pair.get("condition")
    if cond is None:
        return " ".join(pair["trigger"])
    held = " ".join(cond["held_out_forms"])
    return f"{cond['latent']} {cond['value']} ({len(cond['forms'])} forms; held out: {held})"


@functools.cache
def _read_truth(root: Path) -> LMTruth:
    info, _ = artifact.load_truth(root)
    return LMTruth(
        info["flaw"], info["pairs"], info["placement"], info["spec"], info["measured"], info.get("password")
    )
