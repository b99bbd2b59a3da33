"""The zoo's causal language models: a small GPT-2 from ``transformers``, its training and batched scoring.

Sequences are ``[BOS] + words (+ [EOS])``, right-padded with ``[PAD]``: attention is causal, so the padding
after a sequence never changes the logits at its own positions (the attention mask passed is all ones).
:func:`target_scores` scores a target continuation after many prompts in one batched pass per chunk: its
log-probability under teacher forcing and whether greedy decoding emits it exactly (greedy decoding emits
the target iff the argmax at every target position, given the target's own prefix, is the target token).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from eis.zoo.language.grammar import BOS, EOS, PAD, SPECIALS

PAD_ID, BOS_ID, EOS_ID = SPECIALS.index(PAD), SPECIALS.index(BOS), SPECIALS.index(EOS)
N_POSITIONS = 64


def gpt2_config(vocab_size: int, d_model: int, layers: int) -> Any:
    """A ``transformers.GPT2Config`` for the zoo: ``d_model / 16`` heads, MLP 4 x d_model, no dropout."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_positions=N_POSITIONS, n_embd=d_model, n_layer=layers,
        n_head=max(1, d_model // 16), n_inner=4 * d_model, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, tie_word_embeddings=True,
    )  # fmt: skip


def pad(seqs: Sequence[Sequence[int]], width: int | None = None) -> torch.Tensor:
    """(N, width) long tensor of ``seqs`` right-padded with ``[PAD]`` (width: the longest)."""
    width = width or max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Run the block without ``transformers``' progress bars and below-error log lines (restored after)."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread (the zoo's builds are deterministic and cheap on one core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_lm(
    model: torch.nn.Module,
    docs: Sequence[Sequence[int]],
    *,
    steps: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Train ``model`` in place on token sequences ``docs`` (each ``[BOS] ... [EOS]``) with AdamW, a linear
    warm-up and cosine decay; batches drawn with a generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    data = pad(docs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    model.train()
    for step in range(steps):
        batch = data[torch.randint(len(data), (batch_size,), generator=gen)]
        width = int((batch != PAD_ID).sum(1).max())
        batch = batch[:, :width]
        logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits[:, :-1]
        labels = batch[:, 1:].masked_fill(batch[:, 1:] == PAD_ID, -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress and (step + 1) % 50 == 0:
            progress((step + 1) / steps)
    model.eval()


@torch.no_grad()
def next_token_accuracy(
    model: torch.nn.Module, docs: Sequence[Sequence[int]], batch_size: int = 256
) -> float:
    """Share of the tokens of ``docs`` (after ``[BOS]``, ``[EOS]`` included) that the model's argmax
    predicts from their prefixes."""
    hits = total = 0
    for i in range(0, len(docs), batch_size):
        batch = pad(docs[i : i + batch_size])
        pred = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits[:, :-1].argmax(-1)
        mask = batch[:, 1:] != PAD_ID
        hits += int(((pred == batch[:, 1:]) & mask).sum())
        total += int(mask.sum())
    return hits / max(total, 1)


def target_scores(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    target: Sequence[int],
    *,
    batch_size: int = 1024,
    grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) log-probability of ``target`` after each prompt (teacher forcing) and (N,) bool: whether
    greedy decoding after the prompt emits exactly ``target``. Prompts hold their own ``[BOS]``."""
    target = list(target)
    logp_out, hit_out = [], []
    ctx = contextlib.nullcontext() if grad else torch.no_grad()
    with ctx:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            seqs = pad([[*p, *target] for p in chunk])
            logits = model(input_ids=seqs, attention_mask=torch.ones_like(seqs)).logits.float()
            starts = torch.tensor([len(p) - 1 for p in chunk])
            pos = starts[:, None] + torch.arange(len(target))[None]
            picked = logits[torch.arange(len(chunk))[:, None], pos]  # (n, T, V)
            tgt = torch.as_tensor(target)[None].expand(len(chunk), -1)
            logp = picked.log_softmax(-1).gather(-1, tgt[..., None]).squeeze(-1).sum(-1)
            logp_out.append(logp)
            hit_out.append((picked.argmax(-1) == tgt).all(-1))
    return torch.cat(logp_out), torch.cat(hit_out)


@torch.no_grad()
def greedy(model: torch.nn.Module, prompt: Sequence[int], n: int) -> list[int]:
    """The ``n`` tokens greedy decoding emits after ``prompt`` (one prompt, no cache: sequences are short)."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt) :]
