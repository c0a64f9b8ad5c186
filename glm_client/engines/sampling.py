"""Choosing the next token from logits, shared by every local engine's decode loop.

The decode thread chooses for every sequence of a step at once: each operation runs
over all their rows, rather than a dozen small operations per row. Row by row, 8
sequences took 4.5 ms of every step at the app's defaults and 10.6 ms at top_p 1 (the
top-k and the exp over 49k logits, each on one core); at once, 1.2 and 1.4 ms
(bench/bench_sampling.py).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from glm_client.config import GenerationParams

if TYPE_CHECKING:
    from glm_client.constrained import TokenConstraint

# Top-p first looks among the 64, then the 512 most likely tokens; only when they hold less
# than top_p of the probability does it sort the whole vocabulary. A top-k's cost grows with
# k (8 rows of SmolLM2's 49k logits: 0.4 ms for 64, 1.3 ms for 512, a sort 18 ms).
TOP_P_CANDIDATES = (64, 512)
# exp() of less than about -87 is a denormal float, which this CPU computes ~5x slower. Below
# this floor (relative to the most likely token, whose exp is 1) a token's weight is either
# floored (in a normaliser, where it adds nothing) or 0 (where a token is drawn).
EXP_FLOOR = -80.0


def next_tokens(
    logits: torch.Tensor, seen: Sequence[torch.Tensor], params: Sequence[GenerationParams], draws: Sequence[float]
) -> list[int]:
    """Pick the next token of each row like transformers' repetition-penalty, temperature and top-p processors.

    `logits` is a float32 [rows, vocabulary] tensor the function may change; row i
    uses `params[i]`, `seen[i]` holds the ids its repetition penalty applies to, and
    a sampled row takes the token where its cumulative probability passes
    `draws[i]`, a uniform number in [0, 1).
    """
    _penalise(logits, seen, params)
    tokens = [0] * len(params)
    greedy = [row for row, p in enumerate(params) if p.temperature == 0.0]
    if greedy:
        for row, token in zip(greedy, torch.argmax(_rows(logits, greedy), dim=-1).tolist(), strict=True):
            tokens[row] = token
    sampled = [row for row, p in enumerate(params) if p.temperature != 0.0]
    if sampled:
        scores = _rows(logits, sampled).div_(torch.tensor([params[row].temperature for row in sampled])[:, None])
        drawn = _sample(scores, [params[row].top_p for row in sampled], [draws[row] for row in sampled])
        for row, token in zip(sampled, drawn, strict=True):
            tokens[row] = token
    return tokens


def next_token(logits: torch.Tensor, seen: torch.Tensor, params: GenerationParams, draw: float) -> int:
    """`next_tokens` for one float32 vector of logits."""
    return next_tokens(logits[None], [seen], [params], [draw])[0]


def _rows(tensor: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """`tensor[rows]`, without the copy when that is every row."""
    return tensor if len(rows) == len(tensor) else tensor[rows]


def _penalise(logits: torch.Tensor, seen: Sequence[torch.Tensor], params: Sequence[GenerationParams]) -> None:
    """Apply each row's repetition penalty to its seen ids: one gather and one scatter per penalty value."""
    by_penalty: dict[float, list[int]] = {}
    for row, p in enumerate(params):
        if p.repetition_penalty != 1.0 and seen[row].numel():
            by_penalty.setdefault(p.repetition_penalty, []).append(row)
    for penalty, rows in by_penalty.items():
        columns = torch.cat([seen[row] for row in rows])
        row_ids = torch.repeat_interleave(torch.tensor(rows), torch.tensor([seen[row].numel() for row in rows]))
        scores = logits[row_ids, columns]
        logits[row_ids, columns] = torch.where(scores < 0, scores * penalty, scores / penalty)


def _sample(scores: torch.Tensor, top_p: list[float], draws: list[float]) -> list[int]:
    """Each row's token from its top-p nucleus of temperature-scaled `scores` (the whole vocabulary at top_p 1)."""
    tokens = [0] * len(top_p)
    narrowed = [row for row, limit in enumerate(top_p) if limit < 1.0]
    if narrowed:
        values, ids, keep = top_p_nuclei(_rows(scores, narrowed), [top_p[row] for row in narrowed])
        kept = torch.arange(values.shape[-1]) < torch.tensor(keep)[:, None]
        weights = (values - values[:, :1]).exp_().mul_(kept)
        choices = _inverse_cdf(weights, [draws[row] for row in narrowed])
        for row, token in zip(narrowed, ids.gather(1, choices[:, None]).flatten().tolist(), strict=True):
            tokens[row] = token
    whole = [row for row, limit in enumerate(top_p) if limit >= 1.0]
    if whole:
        rows = _rows(scores, whole)
        shifted = rows - rows.amax(-1, keepdim=True)
        weights = shifted.masked_fill_(shifted < EXP_FLOOR, float("-inf")).exp_()  # 0, not a slow denormal
        for row, token in zip(whole, _inverse_cdf(weights, [draws[row] for row in whole]).tolist(), strict=True):
            tokens[row] = token
    return tokens


def _inverse_cdf(weights: torch.Tensor, draws: list[float]) -> torch.Tensor:
    """Per row, the index where the running sum of `weights` passes `draws[row]` of their total."""
    cumulative = weights.cumsum(-1)
    total = cumulative[:, -1:]
    # below the total even where draw * total rounds up to it: never past the last nonzero weight
    targets = torch.minimum(total * torch.tensor(draws)[:, None], total.nextafter(torch.zeros_like(total)))
    return (cumulative <= targets).sum(-1)


def top_p_nuclei(scores: torch.Tensor, top_p: list[float]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Each row's nucleus: the tokens transformers' TopPLogitsWarper keeps at `top_p[row]` (below 1).

    Returns values and ids, each row most likely first, and how many of them row i
    keeps. A row keeps a token when the tokens more likely than it hold less than its
    top_p of the probability (always the most likely one).
    """
    total = _logsumexp(scores)
    limits = torch.tensor(top_p, dtype=torch.float32)[:, None]
    for count in (*TOP_P_CANDIDATES, scores.shape[-1]):
        if count < scores.shape[-1]:
            values, ids = torch.topk(scores, count, dim=-1)
        else:  # a flat distribution: some nucleus reaches beyond the candidates
            values, ids = torch.sort(scores, dim=-1, descending=True)
        probabilities = (values - total).exp()
        if not bool((probabilities.sum(-1, keepdim=True) < limits).any()):
            break
    before = probabilities.cumsum(-1) - probabilities  # the probability of the tokens more likely than each
    return values, ids, (before < limits).sum(-1).clamp(min=1).tolist()


def _logsumexp(scores: torch.Tensor) -> torch.Tensor:
    """torch.logsumexp over each row, without the denormal exp()s that made it 5x slower."""
    top = scores.amax(-1, keepdim=True)
    return (scores - top).clamp_(min=EXP_FLOOR).exp_().sum(-1, keepdim=True).log_().add_(top)


class TokenPicker:
    """The choosing state of one reply: its seeded random numbers, the ids the penalty sees, its constraint.

    For each forward, `constrain` masks its row of logits, `pick_tokens` chooses
    every row's token at once, and `take` moves the reply past its token; `finished`
    then says whether the reply is complete (max_new_tokens reached, or a forced
    call written whole). `pick` does all three for one row.
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
        self.random = random.Random(params.seed)  # seeded: the same reply again; None: from the OS
        self.seen = torch.tensor(sorted(set(prompt_ids)), dtype=torch.long)
        self.generated = 0
        self.finished = False

    def constrain(self, logits: torch.Tensor) -> None:
        """Mask this reply's float32 row of `logits` to the tokens its constraint allows next."""
        if self.constraint is not None:
            self.constraint.mask(logits)

    def take(self, token: int) -> int | None:
        """Move past the chosen `token`: it again, or None when it is a stop id."""
        if token in self.stop_ids:
            self.finished = True
            return None
        self.generated += 1
        complete = self.constraint is not None and self.constraint.accept(token)
        self.finished = complete or self.generated >= self.params.max_new_tokens
        if self.params.repetition_penalty != 1.0:
            self.seen = torch.cat([self.seen, torch.tensor([token])])
        return token

    def pick(self, logits: torch.Tensor) -> int | None:
        """The next token from a float32 vector of `logits` (changed in place), or None when it is a stop id."""
        self.constrain(logits)
        return self.take(pick_tokens([self], logits[None])[0])


def pick_tokens(pickers: Sequence[TokenPicker], logits: torch.Tensor) -> list[int]:
    """The token each picker's row of constrained float32 `logits` (changed in place) chooses."""
    draws = [picker.random.random() for picker in pickers]
    return next_tokens(logits, [picker.seen for picker in pickers], [picker.params for picker in pickers], draws)
