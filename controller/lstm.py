"""The LSTM controller of Zoph & Le (2017) / ENAS (Pham et al. 2018), trained with REINFORCE.

At each step the LSTM reads an embedding of the previous token (one table entry per decision type and
token) and a softmax head for the current decision type scores the choices. Skip decisions
("does layer j feed layer i") use Zoph & Le's attention over the controller's earlier states:
P(j feeds i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)), with h_j the state at the end of layer j.
Logits are shaped as in ENAS, ``tanh_constant * tanh(logits / temperature)``, and the choices that
``obs["action_mask"]`` rules out are masked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from controller.policy import Policy, TokenSpec
from controller.reinforce import Reinforce

Step = tuple[int, int, int, int, tuple[int, ...]]  # decision, layer, source, prev_token, action mask


class LSTMController(nn.Module):
    """The network: token embedding, stacked LSTM cells, one head per decision type, skip attention."""

    def __init__(self, spec: TokenSpec, hidden_size: int = 64, num_layers: int = 1) -> None:
        super().__init__()
        self.spec = spec
        self.hidden_size = hidden_size
        k = spec.num_actions
        self.start_index = len(spec.decision_names) * k
        self.embedding = nn.Embedding(self.start_index + 1, hidden_size)
        self.cells = nn.ModuleList(nn.LSTMCell(hidden_size, hidden_size) for _ in range(num_layers))
        self.heads = nn.ModuleList(nn.Linear(hidden_size, k) for _ in spec.decision_names)
        self.w_prev = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_curr = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)
        for p in self.parameters():  # ENAS initialises the controller uniformly in [-0.1, 0.1]
            nn.init.uniform_(p, -0.1, 0.1)

    def initial_state(self) -> dict[str, Any]:
        zeros = torch.zeros(1, self.hidden_size)
        return {"hc": [(zeros, zeros) for _ in self.cells], "anchors": {}, "prev_type": None}

    def step(self, state: dict[str, Any], step: Step) -> torch.Tensor:
        """Advance ``state`` by one decision and return the raw logits over the K actions (shape (K,))."""
        decision, layer, source, prev_token, _ = step
        k = self.spec.num_actions
        if state["prev_type"] is None or prev_token >= k:
            index = self.start_index
        else:
            index = state["prev_type"] * k + prev_token
        x = self.embedding(torch.tensor([index]))
        new_hc = []
        for cell, (h, c) in zip(self.cells, state["hc"]):
            h, c = cell(x, (h, c))
            new_hc.append((h, c))
            x = h
        state["hc"] = new_hc
        state["prev_type"] = decision
        if self.spec.decision_kinds[decision] == "skip":
            anchor = state["anchors"][source - 1]
            yes = self.v(torch.tanh(self.w_prev(anchor) + self.w_curr(x))).reshape(1)
            logits = torch.cat([torch.zeros(1), yes, torch.zeros(k - 2)])  # softmax over {no, yes} = sigmoid
        else:
            logits = self.heads[decision](x).reshape(k)
        state["anchors"][layer] = x  # ends as the state after the layer's last decision
        return logits


class LSTMPolicy(Policy):
    """LSTM controller + REINFORCE, M episodes per update.

    Acting runs without gradients; at each update the batch's episodes are replayed with gradients.
    With ``replay_top_k`` > 0 the update also replays the best architectures seen so far (self-imitation).
    The pending episodes are plain data, so a checkpoint taken between two episodes is exact.
    """

    def __init__(
        self,
        spec: TokenSpec,
        seed: int = 0,
        hidden_size: int = 64,
        num_layers: int = 1,
        temperature: float = 1.0,
        tanh_constant: float | None = 2.5,
        lr: float = 5e-3,
        baseline_decay: float = 0.95,
        entropy_weight: float = 1e-2,
        grad_clip: float = 5.0,
        batch_size: int = 1,
        reward_transform: str | Callable[[float], float] = "identity",
        replay_top_k: int = 0,
        replay_weight: float = 1.0,
    ) -> None:
        super().__init__(spec, seed)
        if batch_size < 1:
            raise ValueError(f"controller batch_size must be a positive integer, got {batch_size!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if isinstance(replay_top_k, bool) or not isinstance(replay_top_k, int) or replay_top_k < 0:
            raise ValueError(f"controller replay_top_k must be an integer >= 0 (0 disables), got {replay_top_k!r}")
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global RNG
            torch.manual_seed(seed)
            self.net = LSTMController(spec, hidden_size, num_layers)
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.batch_size = batch_size
        self.reinforce = Reinforce(
            self.net.parameters(),
            lr=lr,
            baseline_decay=baseline_decay,
            entropy_weight=entropy_weight,
            grad_clip=grad_clip,
            reward_transform=reward_transform,
            replay_weight=replay_weight,
        )
        self.replay_top_k = replay_top_k
        self.best_episodes: list[tuple[list[Step], list[int], float]] = []  # the replay_top_k best, distinct
        self.generator = torch.Generator().manual_seed(seed)
        self.pending: list[tuple[list[Step], list[int], float]] = []  # episodes waiting for the next update
        self._proposed: list[tuple[list[Step], list[int]]] = []  # episodes played, reward not yet known
        self._state: dict[str, Any] = {}
        self._last_probs: dict[str, list[float]] = {}

    def _log_probs(self, logits: torch.Tensor, mask: tuple[int, ...]) -> torch.Tensor:
        """Shaped, masked log-probabilities over the K actions (-inf where the mask rules a choice out)."""
        logits = logits / self.temperature
        if self.tanh_constant:
            logits = self.tanh_constant * torch.tanh(logits)
        logits = logits.masked_fill(torch.tensor(mask) == 0, float("-inf"))
        return torch.log_softmax(logits, dim=0)

    def proposals_per_round(self) -> int:
        return self.batch_size - len(self.pending)  # the episodes of one update are sampled from one policy

    def start_episode(self) -> None:
        self._state = self.net.initial_state()
        self._proposed.append(([], []))

    @torch.no_grad()
    def act(self, obs: dict[str, Any]) -> int:
        step: Step = (
            int(obs["decision"]),
            int(obs["layer"]),
            int(obs["source"]),
            int(obs["prev_token"]),
            tuple(int(m) for m in obs["action_mask"]),
        )
        log_p = self._log_probs(self.net.step(self._state, step), step[4])
        action = int(torch.multinomial(log_p.exp(), 1, generator=self.generator))
        steps, actions = self._proposed[-1]
        steps.append(step)
        actions.append(action)
        return action

    def end_episode(self, reward: float, info: dict[str, Any]) -> dict[str, float]:
        steps, actions = self._proposed.pop(0)
        self.pending.append((steps, actions, float(reward)))
        if len(self.pending) < self.batch_size:
            return {}
        log_probs, entropies = [], []
        probs: dict[int, list[torch.Tensor]] = {}
        for steps, actions, _ in self.pending:
            lp, ent = self._replay(steps, actions, probs)
            log_probs.append(lp)
            entropies.append(ent)
        replayed = [self._replay(steps, actions, None)[0] for steps, actions, _ in self.best_episodes]
        metrics = self.reinforce.update(
            torch.stack(log_probs),
            torch.stack(entropies),
            [p[2] for p in self.pending],
            replay_log_probs=torch.stack(replayed) if replayed else None,
            replay_rewards=[r for _, _, r in self.best_episodes],
        )
        self._keep_best(self.pending)
        self._last_probs = {
            self.spec.decision_names[t]: torch.stack(ps).mean(0)[: len(self.spec.choice_labels[t])].tolist()
            for t, ps in probs.items()
        }
        self.pending = []
        return metrics

    def _keep_best(self, episodes: list[tuple[list[Step], list[int], float]]) -> None:
        """Keep the ``replay_top_k`` best distinct episodes seen so far, for the self-imitation term."""
        if not self.replay_top_k:
            return
        known = {tuple(actions) for _, actions, _ in self.best_episodes}
        for episode in episodes:
            if tuple(episode[1]) not in known:
                self.best_episodes.append(episode)
                known.add(tuple(episode[1]))
        self.best_episodes.sort(key=lambda e: -e[2])  # stable: among equal rewards the earlier one stays
        del self.best_episodes[self.replay_top_k :]

    def _replay(
        self, steps: list[Step], actions: list[int], probs: dict[int, list[torch.Tensor]] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability and entropy of an episode under the current weights (with gradients);
        the per-step probabilities are added to ``probs`` when given."""
        state = self.net.initial_state()
        lp, ent = torch.zeros(()), torch.zeros(())
        for step, action in zip(steps, actions):
            log_p = self._log_probs(self.net.step(state, step), step[4])
            p = log_p.exp()
            lp = lp + log_p[action]
            # masked_fill, not torch.where: 0 * -inf must not leak NaN into the gradient
            ent = ent - (p * log_p.masked_fill(p == 0, 0.0)).sum()
            if probs is not None:
                probs.setdefault(step[0], []).append(p.detach())
        return lp, ent

    def choice_probabilities(self) -> dict[str, list[float]]:
        return self._last_probs

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "reinforce": self.reinforce.state_dict(),
            "generator": self.generator.get_state(),
            "pending": self.pending,
            "best_episodes": self.best_episodes,
            "last_probs": self._last_probs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.reinforce.load_state_dict(state["reinforce"])
        self.generator.set_state(state["generator"])
        self.pending = [(list(s), list(a), float(r)) for s, a, r in state["pending"]]
        self.best_episodes = [(list(s), list(a), float(r)) for s, a, r in state.get("best_episodes", [])]
        self._last_probs = state["last_probs"]
