"""One hook layer for causal LMs in the ``transformers`` GPT-2 layout, with TransformerLens's hook names.

Tools read and change a language model's internals through this module only. It attaches PyTorch
forward hooks to the model's own modules for the duration of one call (no copy of the weights, no
change to the model; nothing extra runs when nothing is hooked) and names what they see as
TransformerLens does for GPT-2:

| name | what the model computes there | shape |
|---|---|---|
| ``hook_embed`` | token embeddings (``wte``) | (batch, pos, d_model) |
| ``hook_pos_embed`` | position embeddings (``wpe``), as the model computes them | (1, pos, d_model) |
| ``blocks.{i}.hook_resid_pre`` | the residual stream entering block i | (batch, pos, d_model) |
| ``blocks.{i}.ln1.hook_normalized`` | ``ln_1``'s output | (batch, pos, d_model) |
| ``blocks.{i}.attn.hook_q`` / ``_k`` / ``_v`` | queries, keys, values per head | (batch, pos, head, d_head) |
| ``blocks.{i}.attn.hook_z`` | attention-weighted values per head | (batch, pos, head, d_head) |
| ``blocks.{i}.hook_attn_out`` | the attention layer's output | (batch, pos, d_model) |
| ``blocks.{i}.hook_resid_mid`` | resid_pre + attn_out | (batch, pos, d_model) |
| ``blocks.{i}.ln2.hook_normalized`` | ``ln_2``'s output | (batch, pos, d_model) |
| ``blocks.{i}.mlp.hook_pre`` / ``hook_post`` | MLP neurons before / after activation | (batch, pos, d_mlp) |
| ``blocks.{i}.hook_mlp_out`` | the MLP's output | (batch, pos, d_model) |
| ``blocks.{i}.hook_resid_post`` | resid_mid + mlp_out | (batch, pos, d_model) |
| ``ln_final.hook_normalized`` | ``ln_f``'s output, what the unembedding reads | (batch, pos, d_model) |

As with TransformerLens loaded without weight processing (``from_pretrained_no_processing``), LayerNorm
outputs include their weight and bias (TransformerLens also repeats ``hook_pos_embed`` over the batch).
A hook is ``fn(activation, hook)``: ``hook`` is the point's name (a ``str`` whose ``.name`` is itself, as
TransformerLens passes a ``HookPoint``); a tensor returned in the activation's shape replaces it
(patching, steering, ablation), ``None`` leaves it. Replacing ``hook_resid_mid`` is done through the
attention output (``attn_out := new - resid_pre``), exact up to float rounding. Other causal LMs expose
``hook_embed`` (their input embedding) only. Why hooks on ``transformers`` modules rather than a port to
the circuits track's hooked transformer, and the measured overhead: ``benchmarks/bench_lm_hooks.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from eis.errors import EisError


class HookName(str):
    """A hook point's name as passed to hook functions; ``.name`` is the name itself."""

    @property
    def name(self) -> str:
        return str(self)


HookFn = Callable[[torch.Tensor, HookName], torch.Tensor | None]
NameFilter = str | Sequence[str] | Callable[[str], bool]

BLOCK_HOOKS = (
    "hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z",
    "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post",
    "hook_mlp_out", "hook_resid_post",
)  # fmt: skip


@dataclasses.dataclass
class _Run:
    """State shared by one call's hooks: block i's residual input (for ``hook_resid_mid``)."""

    resid_pre: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)


def _same(t: torch.Tensor, run: _Run) -> torch.Tensor:
    return t


def _put(old: torch.Tensor, new: torch.Tensor, run: _Run) -> torch.Tensor:
    return new


@dataclasses.dataclass(frozen=True)
class _Site:
    """Where a hook point lives: a module's first input or (first) output, read and written through
    ``read(tensor, run)`` and ``write(tensor, new, run)``; ``block`` is set for ``hook_resid_mid``."""

    module: nn.Module
    stage: str  # "input" | "output"
    read: Callable[[torch.Tensor, _Run], torch.Tensor] = _same
    write: Callable[[torch.Tensor, torch.Tensor, _Run], torch.Tensor] = _put
    block: int | None = None


def _gpt2_base(model: nn.Module) -> nn.Module | None:
    """The GPT-2 body (``wte``, ``wpe``, ``h``, ``ln_f``) of ``model``, or None for another layout."""
    base = getattr(model, "transformer", model)
    parts = ("wte", "wpe", "h", "ln_f")
    block_parts = ("ln_1", "attn", "ln_2", "mlp")
    if not all(hasattr(base, p) for p in parts) or not isinstance(base.h, nn.ModuleList):
        return None
    if not all(hasattr(b, p) for b in base.h for p in block_parts):
        return None
    return base


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    return t.unflatten(-1, (h, -1))


def _qkv(j: int, d: int, h: int) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """Read / write the j-th of the query, key and value thirds of ``c_attn``'s output, split by head."""

    def read(t: torch.Tensor, run: _Run) -> torch.Tensor:
        return _heads(t[..., j * d : (j + 1) * d], h)

    def write(old: torch.Tensor, new: torch.Tensor, run: _Run) -> torch.Tensor:
        return torch.cat([old[..., : j * d], new.flatten(-2), old[..., (j + 1) * d :]], -1)

    return read, write


def _block_sites(i: int, block: nn.Module) -> dict[str, _Site]:
    attn, mlp = block.attn, block.mlp
    h, d = int(attn.num_heads), int(attn.split_size)
    q, k, v = (_qkv(j, d, h) for j in range(3))

    def mid_read(t: torch.Tensor, run: _Run) -> torch.Tensor:
        return t + run.resid_pre[i]  # the block's own `attn_output + residual`

    def mid_write(old: torch.Tensor, new: torch.Tensor, run: _Run) -> torch.Tensor:
        return new - run.resid_pre[i]

    sites = {
        "hook_resid_pre": _Site(block, "input"),
        "ln1.hook_normalized": _Site(block.ln_1, "output"),
        "attn.hook_q": _Site(attn.c_attn, "output", *q),
        "attn.hook_k": _Site(attn.c_attn, "output", *k),
        "attn.hook_v": _Site(attn.c_attn, "output", *v),
        "attn.hook_z": _Site(attn.c_proj, "input", lambda t, r: _heads(t, h), lambda o, n, r: n.flatten(-2)),
        "hook_attn_out": _Site(attn, "output"),
        "hook_resid_mid": _Site(attn, "output", mid_read, mid_write, block=i),
        "ln2.hook_normalized": _Site(block.ln_2, "output"),
        "mlp.hook_pre": _Site(mlp.c_fc, "output"),
        "mlp.hook_post": _Site(mlp.c_proj, "input"),
        "hook_mlp_out": _Site(mlp, "output"),
        "hook_resid_post": _Site(block, "output"),
    }
    return {f"blocks.{i}.{name}": sites[name] for name in BLOCK_HOOKS}


def _sites(model: nn.Module) -> dict[str, _Site]:
    """Every hook point of ``model``, in the order a forward pass reaches them."""
    base = _gpt2_base(model)
    if base is None:
        return {"hook_embed": _Site(model.get_input_embeddings(), "output")}
    sites = {"hook_embed": _Site(base.wte, "output"), "hook_pos_embed": _Site(base.wpe, "output")}
    for i, block in enumerate(base.h):
        sites.update(_block_sites(i, block))
    sites["ln_final.hook_normalized"] = _Site(base.ln_f, "output")
    return sites


def hook_names(model: nn.Module) -> list[str]:
    """The hook point names of ``model`` in forward order (all of them for the GPT-2 layout)."""
    return list(_sites(model))


def _valid(model: nn.Module, sites: dict[str, _Site]) -> str:
    if _gpt2_base(model) is None:
        return f"valid: hook_embed only (a {type(model).__name__} is not in the GPT-2 layout)"
    n = sum(name.endswith(".hook_resid_pre") for name in sites)
    return (
        f"valid: hook_embed, hook_pos_embed, blocks.{{i}}.{{{', '.join(BLOCK_HOOKS)}}} for i in 0..{n - 1}, "
        "ln_final.hook_normalized"
    )


def _select(model: nn.Module, sites: dict[str, _Site], names: NameFilter) -> list[str]:
    """The names ``names`` picks (a name, a list of names or a filter), in forward order."""
    if callable(names):
        picked = [n for n in sites if names(n)]
        if not picked:
            raise EisError(f"the name filter matches no hook point; {_valid(model, sites)}")
        return picked
    wanted = [names] if isinstance(names, str) else list(names)
    for name in wanted:
        if name not in sites:
            raise EisError(f"no hook point {name!r} on this {type(model).__name__}; {_valid(model, sites)}")
    return [n for n in sites if n in wanted]


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, int | str]:
    if args:
        return args[0], 0
    key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return kwargs[key], key


def _call(fn: HookFn, name: HookName, site: _Site, old: torch.Tensor, run: _Run) -> torch.Tensor | None:
    """``fn`` on the point's activation; the module's new tensor when ``fn`` returns a replacement."""
    act = site.read(old, run)
    new = fn(act, name)
    if new is None:
        return None
    if not isinstance(new, torch.Tensor) or new.shape != act.shape:
        got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise EisError(f"the hook on {name} returned {got}; a replacement must have shape {tuple(act.shape)}")
    return site.write(old, new, run)


def _attach(site: _Site, name: str, fn: HookFn, run: _Run) -> torch.utils.hooks.RemovableHandle:
    hook_name = HookName(name)
    if site.stage == "input":

        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            old, where = _first_tensor(args, kwargs)
            new = _call(fn, hook_name, site, old, run)
            if new is None:
                return None
            if isinstance(where, int):
                return (new, *args[1:]), kwargs
            return args, {**kwargs, where: new}

        return site.module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
        old = out[0] if isinstance(out, tuple) else out
        new = _call(fn, hook_name, site, old, run)
        if new is None:
            return None
        return (new, *out[1:]) if isinstance(out, tuple) else new

    return site.module.register_forward_hook(post)


@contextlib.contextmanager
def hooks(model: nn.Module, fwd_hooks: Sequence[tuple[NameFilter, HookFn]] = ()) -> Iterator[nn.Module]:
    """Attach ``(name or names or filter, fn)`` hooks to ``model`` for the block; removed on exit, also on
    an exception. Every name is checked before any hook is attached."""
    sites = _sites(model)
    order = {name: k for k, name in enumerate(sites)}
    wanted = [(name, fn) for names, fn in fwd_hooks for name in _select(model, sites, names)]
    wanted.sort(key=lambda pair: order[pair[0]])  # forward order: attn_out's hooks before resid_mid's
    run = _Run()
    handles = []
    try:
        for name, fn in wanted:
            handles.append(_attach(sites[name], name, fn, run))
        for i in sorted({sites[name].block for name, _ in wanted if sites[name].block is not None}):
            # after the user's hooks on the block's input, so resid_mid sees a patched resid_pre
            handles.append(_attach(sites[f"blocks.{i}.hook_resid_pre"], "", _keeper(run, i), run))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _keeper(run: _Run, i: int) -> HookFn:
    def keep(act: torch.Tensor, _hook: HookName) -> None:
        run.resid_pre[i] = act

    return keep


def run_with_hooks(
    model: nn.Module,
    input_ids: torch.Tensor,
    fwd_hooks: Sequence[tuple[NameFilter, HookFn]] = (),
    **kwargs: Any,
) -> torch.Tensor:
    """Logits of one forward pass of ``input_ids`` (batch, pos) with ``fwd_hooks`` attached; ``kwargs``
    (e.g. ``attention_mask``) go to the model. Gradients flow through replacements."""
    with hooks(model, fwd_hooks):
        return model(input_ids=input_ids, **kwargs).logits


def run_with_cache(
    model: nn.Module,
    input_ids: torch.Tensor,
    names: NameFilter | None = None,
    *,
    detach: bool = True,
    fwd_hooks: Sequence[tuple[NameFilter, HookFn]] = (),
    **kwargs: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and a dict name -> activation for ``names`` (a name, a list or a filter; None: every hook
    point), detached unless ``detach`` is False. ``fwd_hooks`` run too (their replacements are cached)."""
    cache: dict[str, torch.Tensor] = {}

    def store(act: torch.Tensor, hook: HookName) -> None:
        cache[hook.name] = act.detach() if detach else act

    caching = [((lambda _n: True) if names is None else names, store)]
    logits = run_with_hooks(model, input_ids, [*fwd_hooks, *caching], **kwargs)
    return logits, cache
