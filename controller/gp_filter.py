"""The LSTM controller with a learned predictor that filters its samples before any evaluation (issue 17).

Each proposal, once ``warmup`` results are known, is the best of ``candidates`` architectures sampled from the
LSTM (plus the architectures one choice away from the ``neighbours`` best found so far), not yet evaluated or
in flight, by a Gaussian process fitted to the rewards seen: the highest in one joint draw from its posterior
(Thompson sampling, the default), or the highest posterior mean plus ``beta`` standard deviations (an upper
confidence bound, ``acquisition=ucb``). Thompson sampling now and then tries a candidate the GP rates unlikely
but possible, which frees more searches from a cell whose neighbours all score lower (docs/results/nb201.md,
"Traps: where the searches that miss the best cell end"); the upper bound exploits its early finds more. The LSTM
then learns from the chosen architecture by REINFORCE exactly as from its own sample; ``candidates=1`` turns the
filter off (the plain LSTM). Predictor-filtered sampling, with a neighbourhood of the best as extra candidates, is
the route of BANANAS (White et al. 2021), on top of Zoph & Le's controller.

The candidates are sampled inside the policy, without stepping the environment: the LSTM knows the steps an
episode of each depth takes from the episodes it has played (the layouts behind its greedy decode), so a
candidate is a whole episode drawn along a known layout. An environment whose steps depend on more than the
first decision gets no filter (each proposal is a plain sample), and a candidate whose depth was never played
is dropped. :meth:`act` then replays the chosen episode through ``env.step``, checking every observation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nasrl.controller.lstm import LSTMPolicy, Step
from nasrl.controller.policy import TokenSpec

LENGTHS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # kernel length scales tried, in differing tokens
NOISES = (0.01, 0.1, 0.3)  # noise variances tried, relative to the unit prior variance
ACQUISITIONS = ("thompson", "ucb")


class TokenGP:
    """Gaussian-process regression on token sequences.

    Kernel ``exp(-hamming(a, b) / length)``: the number of positions where two sequences differ, a position
    only one of them has counting as different. Rewards are warped to normal scores of their ranks before the
    fit (a copula, as in HEBO): a failed child's 10% then weighs like any low reward instead of dominating the
    variance. The length scale and the noise are those of :data:`LENGTHS` x :data:`NOISES` with the highest
    marginal likelihood, chosen again at each fit (type-II maximum likelihood on a grid): how far a reward
    tells about its neighbours differs from one search space to the next; fixed values replace the grid."""

    def __init__(self, lengths: tuple[float, ...] = LENGTHS, noises: tuple[float, ...] = NOISES) -> None:
        self.lengths, self.noises = lengths, noises
        self.length = lengths[0]
        self._x = np.zeros((0, 0), dtype=np.int64)
        self._chol = self._alpha = torch.zeros(0, dtype=torch.float64)

    @staticmethod
    def _pad(sequences: list[tuple[int, ...]], width: int) -> np.ndarray:
        x = np.full((len(sequences), width), -1, dtype=np.int64)
        for row, tokens in enumerate(sequences):
            x[row, : len(tokens)] = tokens
        return x

    @staticmethod
    def _hamming(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((a[:, None, :] != b[None, :, :]).sum(-1).astype(np.float64))

    def fit(self, sequences: list[tuple[int, ...]], rewards: list[float]) -> None:
        """Condition on ``rewards`` (one per sequence; at least one)."""
        self._x = self._pad(sequences, max(len(s) for s in sequences))
        ranks = np.argsort(np.argsort(rewards, kind="stable"), kind="stable")
        z = torch.special.ndtri(torch.from_numpy((ranks + 0.5) / len(rewards))).unsqueeze(1)
        hamming, eye = self._hamming(self._x, self._x), torch.eye(len(sequences), dtype=torch.float64)
        best = -np.inf
        for length in self.lengths:
            for noise in self.noises:
                chol = torch.linalg.cholesky(torch.exp(-hamming / length) + noise * eye)
                alpha = torch.cholesky_solve(z, chol)
                log_likelihood = float(-0.5 * (z * alpha).sum() - chol.diagonal().log().sum())
                if log_likelihood > best:
                    best, self.length, self._chol, self._alpha = log_likelihood, length, chol, alpha.squeeze(1)

    def _posterior(self, sequences: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """The posterior mean at ``sequences``, the solve ``v`` behind their covariances, and the sequences
        padded to the fitted ones' width."""
        width = max(self._x.shape[1], *(len(s) for s in sequences))
        x = np.pad(self._x, ((0, 0), (0, width - self._x.shape[1])), constant_values=-1)
        padded = self._pad(sequences, width)
        k_star = torch.exp(-self._hamming(padded, x) / self.length)  # (candidates, seen)
        v = torch.linalg.solve_triangular(self._chol, k_star.T, upper=False)
        return k_star @ self._alpha, v, padded

    def upper_bound(self, sequences: list[tuple[int, ...]], beta: float) -> np.ndarray:
        """Posterior mean + ``beta`` * posterior standard deviation at each sequence (in warped units)."""
        mean, v, _ = self._posterior(sequences)
        std = (1.0 - (v * v).sum(0)).clamp_min(1e-12).sqrt()
        return (mean + beta * std).numpy()

    def sample(self, sequences: list[tuple[int, ...]], scale: float, generator: torch.Generator) -> np.ndarray:
        """One joint draw of the (warped) rewards at ``sequences`` from the posterior, its deviation from the
        mean multiplied by ``scale`` (1: the posterior itself): Thompson sampling's values."""
        mean, v, padded = self._posterior(sequences)
        prior = torch.exp(-self._hamming(padded, padded) / self.length)
        covariance = prior - v.T @ v + 1e-6 * torch.eye(len(sequences), dtype=torch.float64)
        values, vectors = torch.linalg.eigh(covariance)  # not Cholesky: near-equal candidates make it singular
        z = torch.randn(len(sequences), generator=generator, dtype=torch.float64)
        return (mean + scale * (vectors @ (values.clamp_min(0).sqrt() * z))).numpy()


class FilteredLSTMPolicy(LSTMPolicy):
    """:class:`LSTMPolicy` whose every proposal is the best of ``candidates`` LSTM samples by a Gaussian process.

    Args (``controller.*``; the LSTM's own arguments as in :class:`LSTMPolicy`, with its defaults):
        candidates: LSTM samples per proposal (1: no filter, the plain LSTM).
        warmup: results the plain LSTM collects before the filter starts.
        acquisition: how the GP ranks the candidates: ``thompson`` (one joint draw from its posterior) or ``ucb``
            (its mean plus ``beta`` standard deviations).
        beta: ``ucb``: standard deviations added to the GP's mean (0: its mean alone); ``thompson``: the
            draw's deviation from the mean is multiplied by it (1: the posterior itself, 0: the mean alone).
        length: the kernel's length scale, in differing tokens; None: chosen at each fit (see :class:`TokenGP`).
        noise: the GP's noise variance (the prior variance is 1); None: chosen at each fit.
        max_points: the GP is fitted to at most this many results, the best ones (its cost grows as their cube).
        neighbours: the architectures one choice away from each of the ``neighbours`` best so far join the candidates.
    """

    def __init__(
        self,
        spec: TokenSpec,
        seed: int = 0,
        candidates: int = 20,
        warmup: int = 25,
        beta: float = 1.0,
        length: float | None = None,
        noise: float | None = None,
        max_points: int = 500,
        neighbours: int = 1,
        acquisition: str = "thompson",
        **lstm: Any,
    ) -> None:
        super().__init__(spec, seed, **lstm)
        counts = {"candidates": (candidates, 1), "warmup": (warmup, 0), "max_points": (max_points, 1),
                  "neighbours": (neighbours, 0)}  # fmt: skip
        for name, (count, least) in counts.items():
            if not isinstance(count, int) or count < least:
                raise ValueError(f"controller.{name} must be an integer >= {least}, got {count!r}")
        for name, scale in (("length", length), ("noise", noise)):
            if scale is not None and not scale > 0:
                raise ValueError(
                    f"controller.{name} must be a positive number or null (chosen by the fit), got {scale!r}"
                )
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"controller.acquisition must be one of {list(ACQUISITIONS)}, got {acquisition!r}")
        if not beta >= 0:
            raise ValueError(f"controller.beta must be a number >= 0, got {beta!r}")
        self.candidates, self.warmup, self.beta, self.max_points = candidates, warmup, beta, max_points
        self.neighbours, self.acquisition = neighbours, acquisition
        self.gp = TokenGP(LENGTHS if length is None else (length,), NOISES if noise is None else (noise,))
        self.seen: dict[tuple[int, ...], float] = {}  # tokens -> the reward last fed back
        self._plan: tuple[list[Step], list[int]] | None = None  # the chosen candidate's steps and choices
        self._fed = 0  # results fed back to this object
        self._fitted_at: int | None = None  # the value of _fed when the GP was last fitted (None: not since built)

    def start_episode(self) -> None:
        super().start_episode()
        self._plan = self._choose() if self.candidates > 1 and len(self.seen) >= self.warmup else None

    def act(self, obs: dict[str, Any]) -> int:
        if self._plan is not None:
            planned_steps, planned_actions = self._plan
            steps, actions = self._proposed[-1]
            step, t = self.step_of(obs), len(actions)
            if t < len(planned_steps) and step == planned_steps[t]:
                steps.append(step)
                actions.append(planned_actions[t])
                return planned_actions[t]
            # the steps were not fixed by the depth after all: a plain sample from here on, from the state the
            # LSTM has after the steps played (acting along the plan did not advance it)
            self._plan = None
            for played in steps:
                self.net.step(self._state, played)
        return super().act(obs)

    def _choose(self) -> tuple[list[Step], list[int]] | None:
        """The best new candidate by the GP (``acquisition``), as the steps and choices to play; None when no
        candidate could be drawn along a known layout."""
        if not self._layouts:  # the environment's steps are not fixed by the first decision
            return None
        taken = set(self.seen) | {tuple(a) for _, a in self._proposed}  # evaluated, or proposed and in flight
        by_reward = sorted(self.seen, key=lambda tokens: -self.seen[tokens])
        drawn: dict[tuple[int, ...], list[Step]] = {}
        for steps, actions, _ in self.decode_along_layouts(self.candidates, self.draw_rows):
            drawn.setdefault(tuple(actions), steps)
        for tokens in by_reward[: self.neighbours]:
            for steps, actions in self._one_token_away(tokens):
                drawn.setdefault(tuple(actions), steps)
        sequences = [tokens for tokens in drawn if tokens not in taken]
        if not sequences:
            return None
        if self._fitted_at != self._fed:  # a round of several proposals fits once
            best = by_reward[: self.max_points]
            self.gp.fit(best, [self.seen[tokens] for tokens in best])
            self._fitted_at = self._fed
        if self.acquisition == "thompson":
            values = self.gp.sample(sequences, self.beta, self.generator)
        else:
            values = self.gp.upper_bound(sequences, self.beta)
        pick = sequences[int(np.argmax(values))]
        return drawn[pick], list(pick)

    def _one_token_away(self, tokens: tuple[int, ...]) -> list[tuple[list[Step], list[int]]]:
        """The episodes that differ from ``tokens`` in one choice, the first decision (the depth, which fixes the
        steps) kept, along the steps episodes of that depth took; none where those steps are not known."""
        assert self._layouts  # _choose asks only when the layouts are known
        key = self._layout_key(next(iter(self._layouts.values()))[0][0], tokens[0])  # every layout starts alike
        layout = self._layouts.get(key)
        if layout is None or len(layout) != len(tokens):
            return []
        k, episodes = self.spec.num_actions, []
        for t, (_, _, _, mask) in enumerate(layout):
            if t == 0 and key is not None:  # the depth: another depth has other steps
                continue
            for token in np.flatnonzero(mask):
                if token != tokens[t]:
                    actions = [*tokens[:t], int(token), *tokens[t + 1 :]]
                    steps = [(d, layer, src, a, m) for (d, layer, src, m), a in zip(layout, [k, *actions[:-1]])]
                    episodes.append((steps, actions))
        return episodes

    def end_episode(self, reward: float, info: dict[str, Any]) -> dict[str, float]:
        self.seen[tuple(int(t) for t in info["tokens"])] = float(reward)
        self._fed += 1
        metrics = super().end_episode(reward, info)
        if metrics and self._fitted_at is not None:
            metrics["filter_length"] = self.gp.length  # TensorBoard: controller/filter_length
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"seen": dict(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.seen = {tuple(k): float(v) for k, v in state.get("seen", {}).items()}
        self._fitted_at = None  # the GP is refitted to what was loaded
