"""Would training a population's members as one batched model pay? One epoch of M digits cnn models,
one after another vs stacked into one model with ``torch.func`` (``stack_module_state`` + ``vmap``).

    .venv/bin/python benchmarks/bench_population_training.py [--device cpu|cuda] [--members 4 8 16]

Both sides run the same Adam steps on the same batches (64 images of 1x16x16, 1,400 images an epoch, one
torch thread on CPU). Prints, per M, the seconds an epoch (best of ``--repeats``) and the ratio
one-after-another / batched. The zoo trains members one at a time in parallel processes because, on
CPU, this ratio stayed near 1 (see the README's performance table); on a GPU, where such small models
are bound by kernel launches, it is the figure to watch.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from eis.zoo.archs import build_arch

N, BATCH = 1400, 64


def one_after_another(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> float:
    t0 = time.perf_counter()
    for model in models:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for i in range(0, N, BATCH):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i : i + BATCH]), y[i : i + BATCH]).backward()
            opt.step()
    _sync(x.device)
    return time.perf_counter() - t0


def batched(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> float:
    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    skeleton = copy.deepcopy(models[0]).to("meta")
    forward = vmap(lambda p, b, xb: functional_call(skeleton, (p, b), (xb,)))
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    m = len(models)
    t0 = time.perf_counter()
    for i in range(0, N, BATCH):
        xb, yb = x[i : i + BATCH], y[i : i + BATCH]
        opt.zero_grad(set_to_none=True)
        out = forward(params, buffers, xb.expand(m, *xb.shape).contiguous())
        # the sum of the members' mean losses: each member's gradient is its own loss's gradient
        loss = F.cross_entropy(out.flatten(0, 1), yb.repeat(m), reduction="sum") / len(yb)
        loss.backward()
        opt.step()
    _sync(x.device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N, 1, 16, 16, generator=gen).to(device)
    y = torch.randint(0, 10, (N,), generator=gen).to(device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, one epoch = {-(-N // BATCH)} steps")
    for m in args.members:
        seq, bat = [], []
        for r in range(args.repeats):
            torch.manual_seed(r)
            models = [build_arch("cnn", 1, 10, 16).to(device) for _ in range(m)]
            seq.append(one_after_another([copy.deepcopy(mod) for mod in models], x, y))
            bat.append(batched(models, x, y))
        print(
            f"M={m:3d}: one after another {min(seq):6.2f} s, batched {min(bat):6.2f} s, "
            f"ratio {min(seq) / min(bat):.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
