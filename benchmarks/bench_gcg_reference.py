"""eis's GCG against nanoGCG (GraySwanAI's reference GCG): success, queries and seconds per planted target.

For each planted trigger-target pair of the smoke suite's ``lm-backdoor`` (or of backdoors built from
``--seeds``, as in ``bench_lm_trigger.py``), on one torch thread:

* **eis** ``gcg`` through a :class:`TriggerTask` as the ``lm_trigger`` track sets it (triggers of 1-4
  tokens, 5 candidates, 4,096 queries; its defaults: 40 steps, top-k 32, 64 candidates a step, 4 restarts
  cycling the lengths 1-4). It keeps searching after a success (the later restarts look for more
  triggers), so its first success is read off the task's scoring calls as well as its full run.
* **nanoGCG** (``nanogcg`` 0.3.0) on the same model, tokenizer and target with the same top-k (32), search
  width (64, one position swapped a candidate), its early stop on success, and the same 4,096-query budget,
  counted by a hook on the model (every sequence through it, the gradient pass included: 1 for the initial
  string, then 1 + 64 a step, as eis counts). nanoGCG optimises a string of fixed length, so it runs in
  two settings: ``cycle`` (restarts of at most 40 steps cycling the lengths 1-4 as eis does, until success
  or the budget) and ``planted`` (one run at the planted trigger's length, 63 steps: the length is an
  oracle's). Its initial string is drawn uniformly from the allowed words (nanoGCG's ``x x x`` is not in
  this vocabulary); each run is seeded.

nanoGCG builds its prompt from the tokenizer's chat template around an ``{optim_str}`` placeholder and
tokenizes the text before it with special tokens. The zoo's tokenizer has no template; it is given one
that returns the message, and the message is ``{optim_str}`` alone, so the text before the placeholder is
empty and tokenizes to ``[BOS]``, the text after it to nothing: nanoGCG scores ``[BOS] + string + target``,
the prompt eis scores. Both ban the same four special tokens (nanoGCG's non-ASCII filter finds no other).
Two adaptations: nanoGCG's prefix cache (``use_prefix_cache``) indexes ``past_key_values`` as tuples and
fails on the ``DynamicCache`` of the installed ``transformers`` (nanoGCG pins ``transformers<=4.47.1``),
so it is off (the prefix is the one ``[BOS]`` token); its re-tokenisation filter stays on (word-level
strings survive it, so every candidate is scored). nanoGCG calls ``gc.collect()`` (with
``torch.cuda.empty_cache()``) twice per scored batch, most of its seconds on a CPU: the benchmark times
those calls (its modules see a timing stand-in for ``gc``) and prints seconds per 1,000 queries with and
without them. Measured numbers: ``docs/results/language.md``, "GCG against a reference implementation".

Success is eis's REASR definition: greedy decoding after ``[BOS]`` + the returned string emits the target
exactly (eis's best submitted trigger; nanoGCG's ``best_string``, re-encoded). ``holds`` says whether the
string contains the planted trigger word for word. Queries and seconds to success count up to the scoring
batch that first held an emitting string. Install the reference without touching the environment's
``torch`` or ``transformers``::

    pip install --no-deps --target /tmp/nanogcg nanogcg   # scipy and tqdm, which it imports, are in eis's env
    PYTHONPATH=/tmp/nanogcg .venv/bin/python benchmarks/bench_gcg_reference.py [--seeds 1 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace

import torch

from eis.tools.base import make_tool
from eis.tools.lm_trigger.base import TriggerTask
from eis.tracks.lm_trigger import BUDGET, MAX_TOKENS, N_CANDIDATES
from eis.zoo import build_case
from eis.zoo.language.lm import target_scores
from eis.zoo.language.spec import LMSpec
from eis.zoo.suites import load_suite

STEPS, TOP_K, WIDTH = 40, 32, 64  # eis gcg's defaults, given to nanoGCG too
TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


@dataclass
class Outcome:
    """One search on one target: the string it returned, and what it spent."""

    ids: list[int]
    queries: int
    seconds: float
    first_queries: int | None = None  # queries through the batch that first held an emitting string
    first_seconds: float | None = None
    extra: dict = field(default_factory=dict)


def emits(model, tokenizer, ids: list[int], target: str) -> bool:
    """Whether greedy decoding after [BOS] + ids emits exactly the target (eis's REASR check)."""
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    _, hit = target_scores(model, [[tokenizer.bos_token_id, *ids]], target_ids)
    return bool(hit[0])


def holds(words: list[str], trigger: list[str]) -> bool:
    n = len(trigger)
    return any(words[i : i + n] == trigger for i in range(len(words) - n + 1))


def run_eis(model, tokenizer, target: str, seed: int, allowed: torch.Tensor | None = None) -> Outcome:
    task = TriggerTask(model, tokenizer, target, MAX_TOKENS, N_CANDIDATES, BUDGET)
    started, first = time.perf_counter(), {}
    score = task.score

    def watched(triggers):
        logp, hit = score(triggers)
        if bool(hit.any()) and not first:
            first.update(queries=task.queries, seconds=time.perf_counter() - started)
        return logp, hit

    task.score = watched  # type: ignore[method-assign]
    answer = make_tool("gcg", seed=seed).recover(task)
    seconds = time.perf_counter() - started
    return Outcome(answer.token_ids[0], answer.queries, seconds, first.get("queries"), first.get("seconds"))


class Counter:
    """Counts the sequences through a model and notes the first batch in which one emits the target."""

    def __init__(self, model, target_ids: list[int]):
        self.target = torch.tensor(target_ids)
        self.n, self.first, self.started = 0, None, time.perf_counter()
        self.handles = [
            model.register_forward_pre_hook(self.count, with_kwargs=True),
            model.register_forward_hook(self.check),
        ]

    def count(self, _module, _args, kwargs):
        x = kwargs.get("inputs_embeds")
        self.n += int((x if x is not None else kwargs["input_ids"]).shape[0])

    def check(self, _module, _args, output):
        t = len(self.target)
        hit = (output.logits[:, -t - 1 : -1].argmax(-1) == self.target).all(-1).any()
        if self.first is None and bool(hit):
            self.first = (self.n, time.perf_counter() - self.started)

    def close(self):
        for h in self.handles:
            h.remove()


def run_nanogcg(
    model, tokenizer, target: str, lengths: list[int], seed: int, allowed: torch.Tensor
) -> Outcome:
    import nanogcg.gcg
    import nanogcg.utils
    from nanogcg.gcg import GCG, GCGConfig

    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    gen = torch.Generator().manual_seed(seed)
    counter = Counter(model, target_ids)
    gc_seconds = timed_gc()
    results = []  # (mean target loss, ids) per restart
    try:
        for restart in range(len(lengths)):
            steps = (BUDGET - counter.n - 1) // (1 + WIDTH)
            steps = steps if len(lengths) == 1 else min(STEPS, steps)
            if steps < 1 or counter.first is not None:
                break
            init = allowed[torch.randint(len(allowed), (lengths[restart],), generator=gen)].tolist()
            config = GCGConfig(
                num_steps=steps,
                optim_str_init=tokenizer.decode(init),
                search_width=WIDTH,
                topk=TOP_K,
                early_stop=True,
                use_prefix_cache=False,
                seed=seed * 100 + restart,
                verbosity="WARNING",
            )
            result = GCG(model, tokenizer, config).run("{optim_str}", target)
            ids = tokenizer(result.best_string, add_special_tokens=False)["input_ids"]
            results.append((result.best_loss, ids))
    finally:
        counter.close()
        nanogcg.gcg.gc = nanogcg.utils.gc = gc
        torch.use_deterministic_algorithms(False)  # nanoGCG turns it on when seeded
    seconds = time.perf_counter() - counter.started
    # the restart that stopped early on a success, else the least loss over the restarts
    _, ids = results[-1] if counter.first is not None else min(results, key=lambda r: r[0])
    first_q, first_s = counter.first or (None, None)
    return Outcome(ids, counter.n, seconds, first_q, first_s, {"gc_seconds": gc_seconds[0]})


def timed_gc() -> list[float]:
    """Time nanoGCG's ``gc.collect()`` calls (two per scoring call; most of its CPU seconds here): its
    modules see a stand-in that calls ``gc.collect`` and adds the seconds to the returned list's item."""
    import nanogcg.gcg
    import nanogcg.utils

    spent = [0.0]

    def collect(*args: int) -> int:
        started = time.perf_counter()
        try:
            return gc.collect(*args)
        finally:
            spent[0] += time.perf_counter() - started

    nanogcg.gcg.gc = nanogcg.utils.gc = SimpleNamespace(collect=collect)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", help="backdoor seeds (default: smoke's lm-backdoor)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="search seeds per method and target")
    args = parser.parse_args()
    try:
        import nanogcg.gcg
        import nanogcg.utils
        from tqdm import tqdm
    except ImportError:
        sys.exit(
            "nanogcg is not installed: pip install --no-deps --target DIR nanogcg (keeps torch and "
            "transformers), then run with PYTHONPATH=DIR"
        )
    nanogcg.gcg.tqdm = partial(tqdm, disable=True)  # its progress bar, one a run
    torch.set_num_threads(1)
    logging.getLogger("nanogcg").setLevel(logging.ERROR)  # its float32 / CPU warnings
    if args.seeds:
        specs = [LMSpec(f"lm-{s}", seed=s, pairs=args.pairs) for s in args.seeds]
    else:
        specs = [s for s in load_suite("smoke") if isinstance(s, LMSpec) and s.name == "lm-backdoor"]
    rows = []
    for spec in specs:
        case, _ = build_case(spec)
        model, tokenizer = case.model("cpu"), case.tokenizer()
        tokenizer.chat_template = TEMPLATE
        allowed = TriggerTask(model, tokenizer, "x").allowed()
        banned = set(nanogcg.utils.get_nonascii_toks(tokenizer).tolist())
        if banned != set(range(len(tokenizer))) - set(allowed.tolist()):
            print(f"{spec.name}: nanoGCG bans other tokens than eis: {sorted(banned)}")
        for pair in case.truth().pairs:
            target, trigger = " ".join(pair["target"]), list(pair["trigger"])
            methods = {
                "eis gcg": partial(run_eis, model, tokenizer, target),
                "nanogcg cycle": partial(
                    run_nanogcg, model, tokenizer, target, list(range(1, MAX_TOKENS + 1))
                ),
                "nanogcg planted": partial(run_nanogcg, model, tokenizer, target, [len(trigger)]),
            }
            if not rows:  # the first calls pay one-off costs (lazy imports, allocator): not timed
                for method in methods.values():
                    method(0, allowed=allowed)
            for name, method in methods.items():
                for seed in range(args.runs):
                    out = method(seed, allowed=allowed)
                    words = tokenizer.convert_ids_to_tokens(out.ids)
                    row = {
                        "case": spec.name,
                        "trigger": " ".join(trigger),
                        "method": name,
                        "seed": seed,
                        "success": emits(model, tokenizer, out.ids, target),
                        "holds": holds(words, trigger),
                        "queries": out.queries,
                        "seconds": out.seconds,
                        "q_first": out.first_queries,
                        "s_first": out.first_seconds,
                        "gc_seconds": out.extra.get("gc_seconds"),
                    }
                    rows.append(row)
                    first = (
                        "-"
                        if out.first_queries is None
                        else f"{out.first_queries} q {out.first_seconds:.2f} s"
                    )
                    gc_s = out.extra.get("gc_seconds")
                    gc_note = "" if gc_s is None else f" ({gc_s:.2f} s in gc.collect)"
                    print(
                        f"{spec.name} [{row['trigger']}] {name:19s} seed {seed}: {' '.join(words)!r:28s} "
                        f"success {row['success']!s:5s} holds {row['holds']!s:5s} {out.queries:5d} q "
                        f"{out.seconds:6.2f} s{gc_note}; first success {first}",
                        flush=True,
                    )
    summarize(rows)


def summarize(rows: list[dict]) -> None:
    """Means per method over targets and runs, then eis over the reference in seconds and queries."""

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return statistics.fmean(xs) if xs else float("nan")

    means = {}
    print(
        "\nmethod          success holds queries seconds (gc.collect) | to first success: queries seconds (n)"
    )
    for method in dict.fromkeys(r["method"] for r in rows):
        g = [r for r in rows if r["method"] == method]
        m = {
            k: mean([float(r[k]) if r[k] is not None else None for r in g])
            for k in g[0]
            if k not in ("case", "trigger", "method", "seed")
        }
        n = sum(r["q_first"] is not None for r in g)
        means[method] = m
        print(
            f"{method:15s} {m['success']:7.2f} {m['holds']:5.2f} {m['queries']:7.0f} {m['seconds']:7.2f} "
            f"({'-' if math.isnan(m['gc_seconds']) else format(m['gc_seconds'], '6.2f'):>6s}) | "
            f"{m['q_first']:7.0f} {m['s_first']:7.2f} ({n}/{len(g)})"
        )
    e = means["eis gcg"]
    for method, m in means.items():
        if method == "eis gcg":
            continue
        per_k = [1000 * x["seconds"] / x["queries"] for x in (e, m)]
        own = 1000 * (m["seconds"] - m["gc_seconds"]) / m["queries"]
        print(
            f"eis gcg / {method}: seconds {e['seconds'] / m['seconds']:.2f}x, to first success "
            f"{e['s_first'] / m['s_first']:.2f}x; queries {e['queries'] / m['queries']:.2f}x, to first "
            f"success {e['q_first'] / m['q_first']:.2f}x; seconds per 1000 queries {per_k[0]:.2f} vs "
            f"{per_k[1]:.2f} ({own:.2f} without nanoGCG's gc.collect calls)"
        )
        key = ("case", "trigger", "seed")
        ref = {tuple(r[k] for k in key): r["q_first"] for r in rows if r["method"] == method}
        pairs = [
            (r["q_first"], ref[tuple(r[k] for k in key)])
            for r in rows
            if r["method"] == "eis gcg" and r["q_first"] is not None and ref.get(tuple(r[k] for k in key))
        ]
        if pairs:
            ours, theirs = zip(*pairs, strict=True)
            print(
                f"  queries to first success where both succeeded ({len(pairs)} runs): mean "
                f"{statistics.fmean(ours):.0f} vs {statistics.fmean(theirs):.0f} "
                f"({statistics.fmean(ours) / statistics.fmean(theirs):.2f}x), median "
                f"{statistics.median(ours):.0f} vs {statistics.median(theirs):.0f}"
            )


if __name__ == "__main__":
    main()
