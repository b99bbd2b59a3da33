"""Register your own circuit-discovery method on TransformerLens-style hooks, check it, and score it.

Runs offline in a few seconds:  .venv/bin/python examples/custom_circuit_method.py
The zoo's transformers use TransformerLens' hook names and calling conventions (``run_with_hooks`` with
``(name, fn(activation, hook))`` pairs, ``run_with_cache``), so a method written against TransformerLens
ports as is. This one ablates each head through ``blocks.L.attn.hook_z`` and each MLP through
``blocks.L.hook_mlp_out`` (zero ablation only, to stay short) and scores the drop in the task's metric.
"""

from __future__ import annotations

import torch

import eis.zoo
from eis.testing import check_tool
from eis.tools import register_tool
from eis.tools.circuits import CircuitScores, CircuitTask, CircuitTool
from eis.tracks.circuits import CircuitsTrack
from eis.zoo.circuits.spec import CircuitSpec


@register_tool
class ZeroHookPatching(CircuitTool):
    """Zero each head's ``hook_z`` slice and each ``hook_mlp_out``; score = |drop of the mean metric|."""

    name = "zero_hook_patching"
    summary = "example: zero-ablation patching written on TransformerLens hooks"

    def score(self, task: CircuitTask) -> CircuitScores:
        model, tokens = task.model, task.clean
        with torch.no_grad():
            base = task.metric(model(tokens)).mean()
            scores = {}
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):

                    def zero_head(z, hook, head=head):
                        z = z.clone()
                        z[:, :, head] = 0
                        return z

                    logits = model.run_with_hooks(
                        tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)]
                    )
                    scores[f"a{layer}.h{head}"] = (base - task.metric(logits).mean()).abs().item()
                zero_mlp = [(f"blocks.{layer}.hook_mlp_out", lambda out, hook: torch.zeros_like(out))]
                scores[f"m{layer}"] = (
                    (base - task.metric(model.run_with_hooks(tokens, zero_mlp)).mean()).abs().item()
                )
        return CircuitScores.from_nodes(task.graph, scores)


def main() -> dict[str, float]:
    print(check_tool("zero_hook_patching"))  # the shared contract every circuit tool passes
    spec = CircuitSpec("example-reverse", "reverse", "zero", rotate=True, distractors=True, n_inputs=32)
    case, _ = eis.zoo.build_case(spec)  # a compiled tracr program in a rotated basis with distractor heads
    scores = CircuitsTrack().run(case, ZeroHookPatching()).scores
    print({k: round(v, 3) for k, v in scores.items()})
    return scores


if __name__ == "__main__":
    main()
