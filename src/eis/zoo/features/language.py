"""Feature cases over a zoo language model: token activations at a hook point, labelled by known latents.

The rows are the token positions (after ``[BOS]``) of held-out documents of the model's language, read at
one hook point through :mod:`eis.tools.lm_hooks`: the same hook layer tools use, so that a case's hook name
means what it means to a tool (the layer imports nothing of eis but its errors). Documents fill the
``n_train`` rows first, then the ``n_eval`` rows; the document that crosses the boundary is cut (attention is
causal, so a cut never changes the activations of the positions kept), so no document feeds both splits.

Each row is labelled with concepts the generator knows (:func:`concept_names`):

- ``token:name`` / ``token:place`` / ``token:role`` / ``token:attribute``: the current word's category;
- ``topic:t``: the document is about topic t and one of topic t's words has appeared by this position (a
  document's topic words all come from its topic, so this is the generator's topic where the context shows
  it);
- ``question``: the position is inside the closing question (its first word onwards);
- ``trigger:i``: the document carries trigger i of the model's planted pairs (a clean twin's probe pairs),
  and the position is at or after the trigger's last word. ``trigger_rate`` of the documents carry one,
  inserted where the model's placement puts it (the start, or a drawn position); only the trigger is
  inserted, not its target: the input condition, not the model's answer.

Trigger words take their own token category; the context concepts (topic, question) carry over across an
inserted trigger from the position before it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from eis.zoo.language.grammar import N_TOPICS, Document, Language, encode
from eis.zoo.language.lm import BOS_ID, pad

TOKEN_CATEGORIES = ("name", "place", "role", "attribute")
QUESTION_WORDS = 7  # every closing question of the grammar is 7 words long, its answer included
MIN_DOCUMENT_WORDS = 15  # 3 sentences of at least 5 words: an upper bound on the documents rows need


def concept_names(n_pairs: int) -> list[str]:
    """The labelled concepts, in column order, of a case over a model with ``n_pairs`` trigger pairs."""
    return [
        *(f"token:{c}" for c in TOKEN_CATEGORIES),
        *(f"topic:{t}" for t in range(N_TOPICS)),
        "question",
        *(f"trigger:{i}" for i in range(n_pairs)),
    ]


def document_labels(
    lang: Language,
    doc: Document,
    n_pairs: int,
    trigger: tuple[int, int, Sequence[str]] | None = None,
) -> tuple[list[str], torch.Tensor]:
    """(words, (len(words), concepts) bool labels) of ``doc``, with ``trigger`` = (pair index, word position,
    trigger words) inserted there when given (see the module docstring)."""
    names = concept_names(n_pairs)
    col = {n: j for j, n in enumerate(names)}
    category = {w: c for c in TOKEN_CATEGORIES for w in lang.categories[c]}
    topic_words = {*lang.topics[doc.topic]["object"], *lang.topics[doc.topic]["verb"]}
    question_from = len(doc.words) - QUESTION_WORDS if doc.question else len(doc.words)
    clean = torch.zeros(len(doc.words), len(names), dtype=torch.bool)
    seen = False
    for i, w in enumerate(doc.words):
        seen = seen or w in topic_words
        clean[i, col[f"topic:{doc.topic}"]] = seen
        clean[i, col["question"]] = i >= question_from
    words = list(doc.words)
    labels = clean
    if trigger is not None:
        pair, at, trigger_words = trigger
        carried = clean[at - 1] if at > 0 else torch.zeros(len(names), dtype=torch.bool)
        inserted = carried.repeat(len(trigger_words), 1)
        words = [*words[:at], *trigger_words, *words[at:]]
        labels = torch.cat([clean[:at], inserted, clean[at:]])
        labels[at + len(trigger_words) - 1 :, col[f"trigger:{pair}"]] = True
    for i, w in enumerate(words):
        if w in category:
            labels[i, col[f"token:{category[w]}"]] = True
    return words, labels


def labelled_documents(
    lang: Language,
    pairs: Sequence[dict[str, Any]],
    placement: str,
    splits: Sequence[int],
    rate: float,
    seed: int,
) -> list[list[tuple[list[str], torch.Tensor]]]:
    """Held-out documents (words, labels), each carrying a trigger with probability ``rate``: per entry of
    ``splits``, the next documents until they hold at least that many token rows; deterministic in
    ``seed``."""
    rng = random.Random(f"eis-features-lm-{seed}")
    stream = iter(lang.documents("held_out", sum(math.ceil(r / MIN_DOCUMENT_WORDS) + 1 for r in splits)))
    out: list[list[tuple[list[str], torch.Tensor]]] = []
    for rows in splits:
        group: list[tuple[list[str], torch.Tensor]] = []
        total = 0
        while total < rows:
            doc = next(stream)
            trigger = None
            if pairs and rng.random() < rate:
                k = rng.randrange(len(pairs))
                at = 0 if placement == "start" else rng.randint(0, len(doc.words))
                trigger = (k, at, tuple(pairs[k]["trigger"]))
            group.append(document_labels(lang, doc, len(pairs), trigger))
            total += len(group[-1][0])
        out.append(group)
    return out


def hook_activations(
    model: torch.nn.Module, lang: Language, documents: Sequence[Sequence[str]], hook: str, batch: int = 256
) -> list[torch.Tensor]:
    """Per document, (len(words), width) activations at ``hook`` on ``[BOS] + words`` (the ``[BOS]`` row
    dropped), batched."""
    from eis.tools.lm_hooks import run_with_cache

    out: list[torch.Tensor] = []
    with torch.no_grad():
        for i in range(0, len(documents), batch):
            chunk = documents[i : i + batch]
            ids = pad([[BOS_ID, *encode(lang, words)] for words in chunk])
            _, cache = run_with_cache(model, ids, hook, attention_mask=torch.ones_like(ids))
            acts = cache[hook].float()
            out += [acts[j, 1 : 1 + len(words)] for j, words in enumerate(chunk)]
    return out


def lm_rows(
    model: torch.nn.Module,
    lang: Language,
    pairs: Sequence[dict[str, Any]],
    placement: str,
    *,
    hook: str,
    n_train: int,
    n_eval: int,
    rate: float,
    seed: int,
) -> dict[str, torch.Tensor]:
    """``train_activations`` / ``eval_activations`` (rows, width) and ``labels_train`` / ``labels_eval``
    (rows, concepts) bool: the first ``n_train`` token rows, then the next documents' ``n_eval`` rows."""
    groups = labelled_documents(lang, pairs, placement, (n_train, n_eval), rate, seed)
    out: dict[str, torch.Tensor] = {}
    for split, group, rows in zip(("train", "eval"), groups, (n_train, n_eval), strict=True):
        acts = hook_activations(model, lang, [w for w, _ in group], hook)
        out[f"{split}_activations"] = torch.cat(acts)[:rows].contiguous()
        out[f"labels_{split}"] = torch.cat([labels for _, labels in group])[:rows].contiguous()
    return out
