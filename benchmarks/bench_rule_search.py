"""Grammar search: all candidates at once (eis.tools.rule_recovery.search) vs one candidate at a time.

Prints, per family, the seconds of each and their ratio, and checks that both find the same rule.
Not part of the tests.
"""

from __future__ import annotations

import time

import torch

from eis.tools.rule_recovery.search import (
    _threshold_counts,
    best_split,
    image_candidates,
    image_rule,
    linear_mod_rule,
    search_image,
)
from eis.zoo.rules.case import image_inputs
from eis.zoo.rules.grammar import draw, evaluate
from eis.zoo.rules.models import all_pairs


def one_at_a_time_image(family: str, x: torch.Tensor, labels: torch.Tensor) -> dict:
    cands, stats = image_candidates(family, x, "digits")
    best = (-1.0, None)
    for k in range(len(cands)):
        agree, lo, hi = best_split(stats[:, k : k + 1], labels, band=family == "template_band")
        if float(agree[0]) > best[0]:
            best = (float(agree[0]), image_rule(family, "digits", cands[k], float(lo[0]), float(hi[0])))
    return best[1]


def one_at_a_time_linear(pairs: torch.Tensor, labels: torch.Tensor, p: int) -> dict:
    best = (-1.0, None)
    for a in range(p):
        for b in range(p):
            counts = _threshold_counts(((a * pairs[:, 0] + b * pairs[:, 1]) % p)[None], labels, p)[0]
            c = int(counts.argmax())
            if float(counts[c]) / len(pairs) > best[0]:
                best = (
                    float(counts[c]) / len(pairs),
                    {"family": "linear_mod", "p": p, "a": a, "b": b, "c": c},
                )
    return best[1]


def timed(fn, *args):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(1)
    x = image_inputs("digits", "train")
    for family in ("region_mass", "template_band"):
        labels = evaluate(draw(family, 1), x)
        (fast, _), t_fast = timed(search_image, family, x, labels, "digits")
        slow, t_slow = timed(one_at_a_time_image, family, x, labels)
        ratio = t_slow / t_fast
        print(f"{family}: all at once {t_fast:.2f} s, one at a time {t_slow:.2f} s, ratio {ratio:.1f}x, "
              f"same rule: {fast == slow}")  # fmt: skip
    p = 59
    pairs = all_pairs(p)
    labels = evaluate(draw("linear_mod", 1, p=p), pairs)
    (fast, _), t_fast = timed(linear_mod_rule, pairs, labels, p)
    slow, t_slow = timed(one_at_a_time_linear, pairs, labels, p)
    print(f"linear_mod p={p}: all at once {t_fast:.2f} s, one at a time {t_slow:.2f} s, "
          f"ratio {t_slow / t_fast:.1f}x, same rule: {fast == slow}")  # fmt: skip


if __name__ == "__main__":
    main()
