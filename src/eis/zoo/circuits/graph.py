"""The computational graph of a :class:`HookedTransformer` and a forward pass that ablates parts of it.

Sources write to the residual stream: ``embed`` (token + position embeddings), every head ``a{l}.h{h}``
and every MLP ``m{l}``. Destinations read it: each head's query, key and value inputs
(``a{l}.h{h}.q`` ...), each MLP's input ``m{l}`` and the unembedding ``logits``. An edge is a source
that writes before a destination reads. Without LayerNorm the residual a destination reads is exactly
the sum of its sources' outputs, so ablating edge (s, d) means giving d the input
``resid - (out_s - ablated_s)``; ablating node s replaces its output by ``ablated_s`` for everyone. Masks
may be fractional and differentiable, which is how the gradient methods (EAP, EAP-IG, AtP) use them.

Everything runs through the model's TransformerLens-style hooks (``hook_result``, ``hook_q_input``,
``hook_mlp_in``, ...), batched over inputs.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from eis.errors import EisError
from eis.zoo.circuits.model import HookedTransformer, HookPoint

ABLATIONS = ("zero", "mean", "resample")


@dataclasses.dataclass(frozen=True)
class Graph:
    """Node and edge names of a model with ``n_layers`` blocks of ``n_heads`` heads and one MLP each."""

    n_layers: int
    n_heads: int

    @functools.cached_property
    def sources(self) -> list[str]:
        out = ["embed"]
        for layer in range(self.n_layers):
            out += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return out

    @functools.cached_property
    def components(self) -> list[str]:
        """The scored nodes: every head and MLP (``embed`` and ``logits`` belong to every circuit)."""
        return self.sources[1:]

    @functools.cached_property
    def destinations(self) -> list[str]:
        out = []
        for layer in range(self.n_layers):
            out += [f"a{layer}.h{h}.{x}" for x in "qkv" for h in range(self.n_heads)] + [f"m{layer}"]
        return [*out, "logits"]

    def n_before(self, dest: str) -> int:
        """How many sources (in ``sources`` order) write before ``dest`` reads."""
        if dest == "logits":
            return len(self.sources)
        layer = int(dest[1:].split(".")[0])
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if dest.startswith("m") else 0)

    @functools.cached_property
    def edges(self) -> list[tuple[str, str]]:
        return [(s, d) for d in self.destinations for s in self.sources[: self.n_before(d)]]

    @functools.cached_property
    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(source index, destination index) of every edge, for scattering an edge vector into a matrix."""
        si = {s: i for i, s in enumerate(self.sources)}
        di = {d: i for i, d in enumerate(self.destinations)}
        return (
            torch.tensor([si[s] for s, _ in self.edges]),
            torch.tensor([di[d] for _, d in self.edges]),
        )

    def component_of(self, node: str) -> str:
        """The component a source or destination belongs to (``a0.h1.q`` -> ``a0.h1``)."""
        return node.rsplit(".", 1)[0] if node.count(".") == 2 else node

    @staticmethod
    def of(model: HookedTransformer) -> Graph:
        return Graph(model.cfg.n_layers, model.cfg.n_heads)


def source_outputs(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """(n_sources, batch, pos, d_model): every source's output on ``tokens`` (no gradients)."""
    _, cache = model.run_with_cache(
        tokens,
        lambda n: n == "blocks.0.hook_resid_pre" or n.endswith(("attn.hook_result", "hook_mlp_out")),
    )
    outs = [cache["blocks.0.hook_resid_pre"]]
    for layer in range(model.cfg.n_layers):
        outs += list(cache[f"blocks.{layer}.attn.hook_result"].unbind(2))
        outs.append(cache[f"blocks.{layer}.hook_mlp_out"])
    return torch.stack(outs)


def ablated_outputs(
    model: HookedTransformer, clean: torch.Tensor, corrupted: torch.Tensor | None, ablation: str
) -> torch.Tensor:
    """(n_sources, batch or 1, pos, d_model): what each source's output becomes when it is ablated.

    ``zero``: zeros; ``resample``: its output on the paired corrupted input; ``mean``: its mean output
    over the corrupted inputs at each position.
    """
    if ablation not in ABLATIONS:
        raise EisError(f"unknown ablation {ablation!r}; valid: {', '.join(ABLATIONS)}")
    n_src = len(Graph.of(model).sources)
    if ablation == "zero":
        return torch.zeros(n_src, 1, clean.shape[1], model.cfg.d_model, device=clean.device)
    if corrupted is None or corrupted.shape != clean.shape:
        raise EisError(
            f"{ablation} ablation needs corrupted inputs shaped like the clean ones {tuple(clean.shape)}"
        )
    with torch.no_grad():
        outs = source_outputs(model, corrupted)
    return outs.mean(1, keepdim=True) if ablation == "mean" else outs


def patched_logits(
    model: HookedTransformer,
    tokens: torch.Tensor,
    ablated: torch.Tensor,
    *,
    edge_mask: torch.Tensor | None = None,
    node_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits with edges and/or source nodes ablated: mask 1 keeps, 0 ablates, in between interpolates.

    ``edge_mask`` is (n_edges,) or (k, n_edges) in ``Graph.edges`` order; ``node_mask`` is (n_sources,) or
    (k, n_sources). With a leading k the batch is repeated k times (one mask per copy) and the logits come
    back as (k, batch, pos, vocab). ``ablated`` comes from :func:`ablated_outputs`.
    """
    graph = Graph.of(model)
    n_src, n_dst = len(graph.sources), len(graph.destinations)
    batched = (edge_mask is not None and edge_mask.dim() == 2) or (
        node_mask is not None and node_mask.dim() == 2
    )
    k = 1
    if batched:
        k = (edge_mask if edge_mask is not None and edge_mask.dim() == 2 else node_mask).shape[0]
    dev = tokens.device
    keep = None  # (k, n_src, n_dst): 1 - edge mask, i.e. how much of each edge is ablated
    if edge_mask is not None:
        em = edge_mask.reshape(k, -1).to(dev)
        si, di = graph.edge_index
        full = torch.ones(k, n_src, n_dst, device=dev, dtype=em.dtype)
        rows = torch.arange(k, device=dev)[:, None]
        keep = 1 - full.index_put((rows, si.to(dev)[None], di.to(dev)[None]), em)
    nm = None if node_mask is None else node_mask.reshape(k, -1).to(dev)
    b = tokens.shape[0]
    toks = tokens.repeat(k, 1)
    abl = ablated.to(dev)
    diffs: list[torch.Tensor] = []  # per source: (k, b, pos, d) current output - ablated output

    def rep(x: torch.Tensor) -> torch.Tensor:  # ablated value (b or 1, pos, d) -> (k*b, pos, d)
        return x.expand(b, -1, -1).repeat(k, 1, 1)

    def source(act: torch.Tensor, idx: int) -> torch.Tensor:
        a = rep(abl[idx])
        if nm is not None:
            act = a + nm[:, idx].repeat_interleave(b)[:, None, None] * (act - a)
        diffs.append((act - a).reshape(k, b, *act.shape[1:]))
        return act

    stacked: list[torch.Tensor] = []  # torch.stack(diffs, 1), rebuilt only when a source was added

    def dest_delta(dests: list[int]) -> torch.Tensor:
        """(k*b, pos, len(dests), d): how much to subtract from each destination's input."""
        if not stacked or stacked[0].shape[1] != len(diffs):
            stacked[:] = [torch.stack(diffs, 1)]
        d = stacked[0]  # (k, s, b, pos, dm)
        c = keep[:, : d.shape[1], dests].transpose(1, 2)  # (k, n, s)
        out = torch.bmm(c, d.reshape(k, d.shape[1], -1)).reshape(k, len(dests), b, d.shape[3], d.shape[4])
        return out.permute(0, 2, 3, 1, 4).reshape(k * b, d.shape[3], len(dests), d.shape[4])

    hooks: list[tuple[str, object]] = []
    hooks.append(("blocks.0.hook_resid_pre", lambda act, hook: source(act, 0)))
    di = {d: i for i, d in enumerate(graph.destinations)}
    for layer in range(model.cfg.n_layers):
        base = 1 + layer * (model.cfg.n_heads + 1)

        def heads(act: torch.Tensor, hook: HookPoint, base: int = base) -> torch.Tensor:
            return torch.stack([source(act[:, :, h], base + h) for h in range(act.shape[2])], 2)

        hooks.append((f"blocks.{layer}.attn.hook_result", heads))
        hooks.append(
            (f"blocks.{layer}.hook_mlp_out", lambda act, hook, i=base + model.cfg.n_heads: source(act, i))
        )
        if keep is None:
            continue
        for x in "qkv":
            ids = [di[f"a{layer}.h{h}.{x}"] for h in range(model.cfg.n_heads)]
            hooks.append((f"blocks.{layer}.hook_{x}_input", lambda act, hook, ids=ids: act - dest_delta(ids)))
        hooks.append(
            (
                f"blocks.{layer}.hook_mlp_in",
                lambda act, hook, i=di[f"m{layer}"]: act - dest_delta([i])[:, :, 0],
            )
        )
    if keep is not None:
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        hooks.append((last, lambda act, hook: act - dest_delta([n_dst - 1])[:, :, 0]))
    logits = model.run_with_hooks(toks, hooks)  # type: ignore[arg-type]
    return logits.reshape(k, b, *logits.shape[1:]) if batched else logits
