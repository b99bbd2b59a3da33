"""The ``synthesize`` track: can a feature-synthesis tool show an engineer a trigger it has never seen?

After Casper et al. (2023): for each trojaned case with a trigger picture (``patch``, ``blend``,
``natural``, ``style``; ``warp`` is excluded, see ``eis.tracks.judge``), the tool synthesises
``n_images`` images for the trojan's target class from the model and clean held-out inputs, and the
automated judge answers the 8-way question "which of these triggers is the planted one?" from those
images. A cell scores
``correct`` (0/1), ``rank`` of the true option among the 8 by the judge's similarity (1 = picked), and
keeps the judge's similarities so that tools can be combined afterwards.

``summarize``: accuracy per tool, per trojan kind and pooled, with bootstrap CIs over cases (``eis.stats``),
chance (1/8) in its own column and a verdict on whether the CI clears it, the margin over the best control
(paired by case), and two combinations of the non-control tools:

- ``all tools combined``: per case the judge's similarities averaged over the tools, then the argmax, i.e.
  the judge looking at every tool's images at once. Chance stays 1/8, so it is comparable to one tool.
- ``any tool (oracle)``: solved if any tool's images led the judge right. This is how "all tools together"
  is sometimes counted, but it is an upper bound whose chance level grows with the number of tools m,
  1 - (7/8)^m, which its row states; read it against that, not against 1/8.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from eis.cache import Prep
from eis.errors import EisError
from eis.stats import CI, bootstrap_ci, ci_columns, paired_bootstrap_ci, verdict
from eis.tools.synthesis.base import SynthesisTool
from eis.tracks.base import CellResult, Track, register_track, standalone, stored_dict
from eis.tracks.judge import CHANCE, JUDGED_KINDS, N_OPTIONS, build_question, get_judge

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from eis.tools.base import Tool
    from eis.zoo.case import Case

COMBINED = "all tools combined"
ORACLE = "any tool (oracle)"
COLUMNS = [
    "tool",
    "control",
    "flaw",
    "metric",
    "mean",
    "lo",
    "hi",
    "n",
    "n_items",
    "n_failed",
    "chance",
    "best_control",
    "margin",
    "margin_lo",
    "margin_hi",
    "verdict",
]


@register_track
class SynthesizeTrack(Track):
    """8-way trigger identification from synthesised images, answered by an independent judge.

    Settings: ``n_inputs`` clean held-out inputs given to the tool (a seeded draw), ``n_gallery``
    synthesised images kept for the report, ``n_resamples`` for the bootstrap CIs, ``judge_steps`` the
    judge's training length (None: its default; tests use fewer).
    """

    name: ClassVar[str] = "synthesize"
    version: ClassVar[str] = "2"  # 2: the judge knows the style library
    family: ClassVar[str] = "synthesis"
    headline: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "Do a tool's synthesised images let a judge pick the real trigger out of 8 (Casper et al. 2023)?"
    )

    def __init__(
        self, n_inputs: int = 256, n_gallery: int = 4, n_resamples: int = 1000, judge_steps: int | None = None
    ) -> None:
        if n_inputs < 1 or n_gallery < 0 or n_resamples < 1:
            raise EisError(
                f"synthesize: need n_inputs >= 1, n_gallery >= 0, n_resamples >= 1; got "
                f"{n_inputs}, {n_gallery}, {n_resamples}"
            )
        self.n_inputs, self.n_gallery, self.n_resamples = n_inputs, n_gallery, n_resamples
        self.judge_steps = judge_steps  # None: the judge's default training length (tests use fewer)

    def applies_to(self, case: Case) -> bool:
        if not standalone(case):
            return False
        truth = case.truth()
        return truth.kind in JUDGED_KINDS and truth.trigger is not None

    def prepare(self, case: Case, tool: Tool, partners: Sequence[Case] = ()) -> list[Prep]:
        """The dataset's judge and whatever the tool trains once per dataset (the feature-level
        adversary's generator): the runner trains them side by side before the cells."""
        steps = self.judge_steps
        key = f"judge {case.dataset}" + (f" ({steps} steps)" if steps else "")
        preps = [Prep(key, functools.partial(get_judge, case.dataset, steps))]
        return preps + (tool.prepare(case.dataset) if isinstance(tool, SynthesisTool) else [])

    def inputs(self, case: Case, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The seeded draw of clean held-out inputs (and labels) a tool is given."""
        x, y = case.inputs(split="test")
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: self.n_inputs]
        return x[idx], y[idx]

    def synthesize(self, case: Case, tool: Tool, seed: int = 0) -> torch.Tensor:
        """The tool's images for the case's target class, checked: (K, C, H, W), finite, in [0, 1]."""
        if not isinstance(tool, SynthesisTool):
            raise EisError(
                f"synthesize runs synthesis tools; {tool.name!r} is a {tool.family or 'non-synthesis'} tool"
            )
        truth = case.truth()
        if truth.kind not in JUDGED_KINDS or truth.target is None:
            raise EisError(
                f"synthesize: case {case.name!r} has flaw {truth.kind!r}; valid: {', '.join(JUDGED_KINDS)}"
            )
        x, y = self.inputs(case, seed)
        images = _seeded(tool, seed).synthesize(
            case.model(), int(truth.target), x, labels=y, dataset=case.dataset
        )
        c, h, w = case.input_shape
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (c, h, w):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise EisError(f"tool {tool.name!r} returned {shape}; expected images (K, {c}, {h}, {w})")
        images = images.detach().float().cpu()
        if len(images) == 0 or not torch.isfinite(images).all():
            raise EisError(f"tool {tool.name!r} returned no images or non-finite values")
        if images.min() < -1e-4 or images.max() > 1 + 1e-4:
            raise EisError(
                f"tool {tool.name!r} returned values in [{float(images.min()):.3g}, "
                f"{float(images.max()):.3g}]; images must be in [0, 1]"
            )
        return images.clamp(0, 1)

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        images = self.synthesize(case, tool, seed)
        truth = case.truth()
        c, h, _ = case.input_shape
        question = build_question(truth, c, h, key=case.id)
        answer = get_judge(case.dataset, self.judge_steps).answer(images, question)
        sims = answer.similarities
        rank = 1 + sum(s > sims[question.answer] for s in sims)
        scores = {
            "correct": float(answer.correct(question)),
            "rank": float(rank),
            "margin": sims[question.answer] - max(s for i, s in enumerate(sims) if i != question.answer),
        }
        extras = {
            "target": int(truth.target),
            "answer": question.answer,
            "choice": answer.choice,
            "options": [o.name for o in question.options],
            "similarities": sims,
            "n_images": len(images),
        }
        gallery = {f"synth_{i}": images[i].numpy() for i in range(min(self.n_gallery, len(images)))}
        gallery["true_trigger"] = question.options[question.answer].display(h).numpy()
        return CellResult(scores=scores, flaw=truth.kind, extras=extras, gallery=gallery)

    # ------------------------------------------------------------------------------------ summarize

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Long table: per tool (and the two combinations) x trojan kind (and "all") x metric (accuracy,
        rank), the mean with a bootstrap CI over cases, chance, the margin over the best control (paired
        by case) and a verdict on whether accuracy is above chance. Failed cells are counted in n_failed."""
        import pandas as pd

        if "track" in rows.columns:
            rows = rows[rows["track"] == self.name]
        if rows.empty:
            return pd.DataFrame(columns=COLUMNS)
        cells = _cells(rows)
        kinds = sorted({c["flaw"] for c in cells if c["flaw"]})
        tools = sorted(str(t) for t in rows["tool"].unique())
        control = {t: bool(rows.loc[rows["tool"] == t, "control"].iloc[0]) for t in tools}
        failed = {t: int((rows.loc[rows["tool"] == t, "status"] == "failed").sum()) for t in tools}
        boot = {"n_resamples": self.n_resamples, "seed": 0}
        out: list[dict[str, Any]] = []
        for flaw in [*kinds, "all"]:
            group = [c for c in cells if flaw == "all" or c["flaw"] == flaw]
            per_tool = {t: {c["case_id"]: c for c in group if c["tool"] == t} for t in tools}
            acc = {t: _values(per_tool[t], "correct") for t in tools}
            cis = {t: bootstrap_ci(list(acc[t].values()), **boot) for t in tools}
            ctrls = [t for t in tools if control[t] and cis[t].n > 0]
            best = max(ctrls, key=lambda t: cis[t].mean, default=None)
            for t in tools:
                margin = _paired(acc[t], acc[best], boot) if best is not None and best != t else None
                base = {
                    "tool": t,
                    "control": control[t],
                    "flaw": flaw,
                    "n_failed": failed[t],
                    "best_control": best or "",
                }
                text = "control" if control[t] else _verdict(cis[t], CHANCE)
                out.append(
                    {
                        **base,
                        **ci_columns(cis[t], margin),
                        "metric": "accuracy",
                        "chance": CHANCE,
                        "verdict": text,
                    }
                )
                rank = bootstrap_ci(list(_values(per_tool[t], "rank").values()), **boot)
                out.append(
                    {
                        **base,
                        **ci_columns(rank, None),
                        "metric": "rank",
                        "chance": (N_OPTIONS + 1) / 2,
                        "verdict": "",
                    }
                )
            tool_set = [t for t in tools if not control[t]]
            if tool_set:
                out.extend(self._combined(per_tool, tool_set, acc, best, flaw, boot))
        return pd.DataFrame(out, columns=COLUMNS)

    def _combined(
        self,
        per_tool: dict[str, dict[str, dict]],
        tools: list[str],
        acc: dict[str, dict[str, float]],
        best: str | None,
        flaw: str,
        boot: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Rows for the mean-similarity combination and the any-tool oracle of the non-control tools."""
        cases = sorted({cid for t in tools for cid in per_tool[t]})
        combined, oracle = {}, {}
        for cid in cases:
            hits = [per_tool[t][cid] for t in tools if cid in per_tool[t]]
            sims = [h["extras"].get("similarities") for h in hits]
            sims = [s for s in sims if s and len(s) == N_OPTIONS]
            answer = hits[0]["extras"].get("answer")
            if sims and answer is not None:
                combined[cid] = float(int(np.argmax(np.mean(sims, axis=0))) == int(answer))
            oracle[cid] = float(max(h["scores"].get("correct", 0.0) for h in hits))
        m = len(tools)
        out = []
        for name, vals, chance in ((COMBINED, combined, CHANCE), (ORACLE, oracle, 1 - (1 - CHANCE) ** m)):
            ci = bootstrap_ci(list(vals.values()), **boot)
            margin = _paired(vals, acc[best], boot) if best is not None else None
            text = _verdict(ci, chance) + f" ({m} tools: {', '.join(tools)})"
            out.append(
                {
                    "tool": name,
                    "control": False,
                    "flaw": flaw,
                    "metric": "accuracy",
                    **ci_columns(ci, margin),
                    "n_failed": 0,
                    "chance": chance,
                    "best_control": best or "",
                    "verdict": text,
                }
            )
        return out


# ------------------------------------------------------------------------------------------ helpers


def _seeded(tool: SynthesisTool, seed: int) -> SynthesisTool:
    """A copy of the tool with its seed offset by the cell's seed (when it has one)."""
    fields = {f.name for f in dataclasses.fields(tool)}
    if "seed" in fields and seed:
        return dataclasses.replace(tool, seed=tool.seed + seed)
    return tool


def _cells(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The ok cells as dicts (failed cells carry no score; they are counted per tool in n_failed)."""
    out = []
    for _, r in rows[rows["status"] == "ok"].iterrows():
        out.append(
            {
                "case_id": str(r["case_id"]),
                "tool": str(r["tool"]),
                "flaw": str(r.get("flaw") or ""),
                "scores": stored_dict(r["scores"]),
                "extras": stored_dict(r.get("extras", {})),
            }
        )
    return out


def _values(cells: dict[str, dict], metric: str) -> dict[str, float]:
    return {cid: float(c["scores"][metric]) for cid, c in cells.items() if metric in c["scores"]}


def _paired(a: dict[str, float], b: dict[str, float], boot: dict[str, Any]) -> CI | None:
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return paired_bootstrap_ci([a[k] for k in common], [b[k] for k in common], **boot)


def _verdict(ci: CI, chance: float) -> str:
    """Whether accuracy is above ``chance``: the verdict on the CI shifted by chance."""
    if ci.n == 0:
        return "above chance: n/a"
    shifted = CI(ci.mean - chance, ci.lo - chance, ci.hi - chance, ci.n, ci.n_items)
    return f"above chance ({chance:.3f}): {verdict(shifted)}"
