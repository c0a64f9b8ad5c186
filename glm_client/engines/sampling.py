"""Choosing the next token from logits, shared by every local engine's decode loop."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from glm_client.config import GenerationParams

if TYPE_CHECKING:
    from glm_client.constrained import TokenConstraint

# Top-p first looks among this many most likely tokens; only when they hold less than
# top_p of the probability does it sort the whole vocabulary. Sorting SmolLM2's 49k
# logits every token cost ~5 ms here, half a decode step of the packed path.
TOP_P_CANDIDATES = 512


def next_token(
    logits: torch.Tensor, seen: torch.Tensor, params: GenerationParams, generator: torch.Generator | None
) -> int:
    """Pick the next token like transformers' repetition-penalty, temperature and top-p processors.

    `logits` is a float32 vector the function may change; `seen` holds the ids the
    repetition penalty applies to.
    """
    if params.repetition_penalty != 1.0 and seen.numel():
        scores = logits[seen]
        logits[seen] = torch.where(scores < 0, scores * params.repetition_penalty, scores / params.repetition_penalty)
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    logits.div_(params.temperature)
    if params.top_p < 1.0:
        values, ids = top_p_candidates(logits, params.top_p)
        choice = torch.multinomial(values.softmax(-1), 1, generator=generator)
        return int(ids[choice])
    probabilities = logits.softmax(-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def top_p_candidates(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and ids of the nucleus, most likely first: the tokens transformers' TopPLogitsWarper keeps.

    It keeps a token when the tokens more likely than it hold less than `top_p` of the
    probability (always the most likely one).
    """
    total = torch.logsumexp(logits, dim=-1)
    values, ids = torch.topk(logits, min(TOP_P_CANDIDATES, logits.numel()))
    mass = (values - total).exp().cumsum(-1)
    if mass[-1] < top_p:  # a flat distribution: the nucleus reaches beyond the candidates
        values, ids = torch.sort(logits, descending=True)
        mass = (values - total).exp().cumsum(-1)
    before = mass - (values - total).exp()  # the probability of the tokens more likely than each
    keep = int((before < top_p).sum().clamp(min=1))
    return values[:keep], ids[:keep]


class TokenPicker:
    """The choosing state of one reply: its seeded generator, the ids the penalty sees, its constraint.

    `pick` takes the logits after each forward; `finished` then says whether the
    reply is complete (max_new_tokens reached, or a forced call written whole).
    """

    def __init__(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        stop_ids: set[int],
        constraint: TokenConstraint | None = None,
    ) -> None:
        if constraint is not None:
            # A forced call must repeat the prompt's quotes, braces and values, and penalising
            # them kept strings from closing (bench/bench_constrained.py).
            params = dataclasses.replace(params, repetition_penalty=1.0)
        self.params = params
        self.stop_ids = stop_ids
        self.constraint = constraint
        self.generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        self.seen = torch.tensor(sorted(set(prompt_ids)), dtype=torch.long)
        self.generated = 0
        self.finished = False

    def pick(self, logits: torch.Tensor) -> int | None:
        """The next token from float32 `logits` (changed in place), or None when it is a stop id."""
        if self.constraint is not None:
            self.constraint.mask(logits)
        token = next_token(logits, self.seen, self.params, self.generator)
        if token in self.stop_ids:
            self.finished = True
            return None
        self.generated += 1
        complete = self.constraint is not None and self.constraint.accept(token)
        self.finished = complete or self.generated >= self.params.max_new_tokens
        if self.params.repetition_penalty != 1.0:
            self.seen = torch.cat([self.seen, torch.tensor([token])])
        return token
