"""The LSTM controller of Zoph & Le (2017) / ENAS (Pham et al. 2018), trained with REINFORCE.

At each step the LSTM reads an embedding of the previous token (one table entry per decision type and
token) and a softmax head for the current decision type scores the choices. Skip decisions
("does layer j feed layer i") use Zoph & Le's attention over the controller's earlier states:
P(j feeds i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)), with h_j the state at the end of layer j.
Logits are shaped as in ENAS, ``tanh_constant * tanh(logits / temperature)``, and the choices that
``obs["action_mask"]`` rules out are masked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nasrl.controller.policy import Policy, TokenSpec
from nasrl.controller.reinforce import Reinforce

Step = tuple[int, int, int, int, tuple[int, ...]]  # decision, layer, source, prev_token, action mask
Position = tuple[int, int, int, int]  # a step of a layout: decision, layer, source, number of valid choices


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _linear(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``weight`` applied to one vector (H,) or to each row of (B, H)."""
    if x.ndim == 1:
        return weight @ x
    # torch's matmul for a batch: numpy's OpenBLAS threads fight torch's for the cores once torch is imported,
    # which made a (200, 64) x (64, 256) product a hundred times slower on two cores
    return (torch.from_numpy(x) @ torch.from_numpy(weight).T).numpy()


class LSTMController(nn.Module):
    """The network: token embedding, stacked LSTM cells, one head per decision type, skip attention.

    Two ways through it with the same arithmetic: :meth:`step` advances one decision at a time, in numpy
    (acting, as the environment asks); :meth:`replay` runs a batch of finished episodes that share one
    layout at once, in torch (scoring them with gradients for the update).
    """

    def __init__(self, spec: TokenSpec, hidden_size: int = 64, num_layers: int = 1) -> None:
        super().__init__()
        self.spec = spec
        self.hidden_size = hidden_size
        k = spec.num_actions
        self.start_index = len(spec.decision_names) * k
        self.embedding = nn.Embedding(self.start_index + 1, hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers)  # a whole episode in one call when replayed
        self.heads = nn.ModuleList(nn.Linear(hidden_size, k) for _ in spec.decision_names)
        self.w_prev = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_curr = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)
        for p in self.parameters():  # ENAS initialises the controller uniformly in [-0.1, 0.1]
            nn.init.uniform_(p, -0.1, 0.1)

    def input_index(self, prev_decision: int | None, prev_token: int) -> int:
        """Embedding row read at a step: the previous decision's type and token, or the start row."""
        k = self.spec.num_actions
        return self.start_index if prev_decision is None or prev_token >= k else prev_decision * k + prev_token

    def initial_state(self) -> dict[str, Any]:
        """An episode's acting state; it holds numpy views of the weights, which the update changes in place
        and which stay fixed during an episode."""
        weights: dict[str, Any] = {
            name: p.detach().numpy() for name, p in self.named_parameters() if not name.startswith("heads")
        }
        weights["heads"] = [(head.weight.detach().numpy(), head.bias.detach().numpy()) for head in self.heads]  # type: ignore[operator]
        return {"weights": weights, "hc": None, "anchors": {}, "prev_type": None}

    def _skip_logit(self, anchor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Zoph & Le's attention: the logit of "the layer of ``anchor`` feeds the layer of ``x``"."""
        return self.v(torch.tanh(self.w_prev(anchor) + self.w_curr(x))).squeeze(-1)

    def step(self, state: dict[str, Any], step: Step) -> np.ndarray:
        """Advance ``state`` by one decision and return the raw logits over the K actions (shape (K,)).

        Acting needs no gradients, and at this size torch's per-operation overhead is several times the
        arithmetic, so this runs in numpy on the weights of ``state``: the same gates (nn.LSTM's order
        i, f, g, o), heads and attention as :meth:`replay`, which a test checks."""
        decision, layer, source, prev_token, _ = step
        x = state["weights"]["embedding.weight"][self.input_index(state["prev_type"], prev_token)]
        return self._advance(state, x, decision, layer, source)

    def step_batch(self, state: dict[str, Any], step: tuple[int, int, int], prev_tokens: np.ndarray) -> np.ndarray:
        """:meth:`step` for B episodes at once that share this step (decision, layer, source) and the decision
        type before it, each with its own previous token (B,); ``state`` holds (B, H) arrays. Returns the raw
        logits (B, K). Drawing many candidate episodes this way costs about as much as drawing one."""
        prev_type, k = state["prev_type"], self.spec.num_actions
        rows = np.full(len(prev_tokens), self.start_index) if prev_type is None else prev_type * k + prev_tokens
        return self._advance(state, state["weights"]["embedding.weight"][rows], *step)

    def _advance(self, state: dict[str, Any], x: np.ndarray, decision: int, layer: int, source: int) -> np.ndarray:
        """The LSTM layers, then the decision's head or skip attention, on the input embedding ``x``: (H,) for
        one episode, (B, H) for B at once; advances ``state`` and returns the raw logits, (K,) or (B, K)."""
        w = state["weights"]
        hc = state["hc"] or [(np.zeros_like(x), np.zeros_like(x))] * self.lstm.num_layers
        for i in range(self.lstm.num_layers):
            gates = _linear(w[f"lstm.weight_ih_l{i}"], x) + w[f"lstm.bias_ih_l{i}"]
            gates += _linear(w[f"lstm.weight_hh_l{i}"], hc[i][0]) + w[f"lstm.bias_hh_l{i}"]
            gate_i, gate_f, gate_g, gate_o = np.split(gates, 4, axis=-1)
            c = _sigmoid(gate_f) * hc[i][1] + _sigmoid(gate_i) * np.tanh(gate_g)
            x = _sigmoid(gate_o) * np.tanh(c)
            hc[i] = (x, c)
        state["hc"] = hc
        state["prev_type"] = decision
        if self.spec.decision_kinds[decision] == "skip":
            anchor = state["anchors"][source - 1]
            logits = np.zeros((*x.shape[:-1], self.spec.num_actions), dtype=x.dtype)
            attention = np.tanh(_linear(w["w_prev.weight"], anchor) + _linear(w["w_curr.weight"], x))
            logits[..., 1] = attention @ w["v.weight"][0]  # softmax over {no: 0, yes} = sigmoid(yes)
        else:
            weight, bias = w["heads"][decision]
            logits = _linear(weight, x) + bias
        state["anchors"][layer] = x  # ends as the state after the layer's last decision
        return logits

    def replay(self, layout: Sequence[tuple[int, int, int]], inputs: torch.Tensor) -> torch.Tensor:
        """Raw logits (T, B, K) of B episodes that share ``layout`` ((decision, layer, source) per step),
        fed the embedding rows ``inputs`` (T, B) (see :meth:`input_index`)."""
        steps, batch = inputs.shape
        states, _ = self.lstm(self.embedding(inputs))  # (T, B, H): the top layer's state after each step
        decisions = [decision for decision, _, _ in layout]
        used = sorted(set(decisions))
        # every used head on every step (tiny matmuls), then each step keeps its own decision type's
        per_head = torch.stack([self.heads[d](states) for d in used])  # (D, T, B, K)
        logits = per_head[[used.index(d) for d in decisions], torch.arange(steps)]
        anchor_at: dict[int, int] = {}  # layer -> its latest step so far, as in ``step``
        skips: list[tuple[int, int]] = []  # (step, step of the anchor it attends to)
        for t, (decision, layer, source) in enumerate(layout):
            if self.spec.decision_kinds[decision] == "skip":
                skips.append((t, anchor_at[source - 1]))
            anchor_at[layer] = t
        if skips:  # a skip step's logits are (0, yes, 0, ...), as in ``step``
            at, anchors = (list(x) for x in zip(*skips))
            rows = states.new_zeros(len(at), batch, self.spec.num_actions)
            rows[..., 1] = self._skip_logit(states[anchors], states[at])
            logits = logits.index_put((torch.tensor(at),), rows)
        return logits


class LSTMPolicy(Policy):
    """LSTM controller + REINFORCE, M episodes per update.

    Acting runs without gradients; at each update the batch's episodes are replayed with gradients.
    With ``replay_top_k`` > 0 the update also replays the best architectures seen so far (self-imitation).
    The pending episodes are plain data, so a checkpoint taken between two episodes is exact.

    Args (``controller.*`` on the command line; these defaults are the command line's, tuned on
    NAS-Bench-201, see docs/results/nb201.md):
        hidden_size: LSTM units (ENAS: 64; Zoph & Le: 35).
        num_layers: stacked LSTM layers (ENAS: 1; Zoph & Le: 2).
        temperature: logits are divided by this before the tanh shaping.
        tanh_constant: logits = tanh_constant * tanh(logits / temperature) (ENAS: 1.5 macro, 2.5 micro);
            None disables the shaping.
        lr: Adam learning rate (ENAS: 0.001 to 0.0035).
        baseline_decay: b <- decay * b + (1 - decay) * R after each episode.
        entropy_weight: weight of the entropy bonus on an episode's summed entropy (ENAS: 0.0001).
        grad_clip: gradient-norm clipping; 0 disables.
        batch_size: M, architectures per REINFORCE update (and per round of children trained at once).
        replay_top_k: self-imitation (Oh et al. 2018): each update also replays the k best architectures
            so far; 0 disables.
        replay_weight: weight of that term, -replay_weight * mean[max(R - b, 0) * log pi].
    """

    updates: int  # REINFORCE steps taken (never None here)

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
        entropy_weight: float = 2e-2,
        grad_clip: float = 5.0,
        batch_size: int = 1,
        replay_top_k: int = 1,
        replay_weight: float = 1.0,
    ) -> None:
        super().__init__(spec, seed)
        if batch_size < 1:
            raise ValueError(f"controller batch_size must be a positive integer, got {batch_size!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if replay_top_k < 0:
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
            replay_weight=replay_weight,
        )
        self.replay_top_k = replay_top_k
        self.best_episodes: list[tuple[list[Step], list[int], float]] = []  # the replay_top_k best, distinct
        self.generator = torch.Generator().manual_seed(seed)
        self.pending: list[tuple[list[Step], list[int], float]] = []  # episodes waiting for the next update
        self._proposed: list[tuple[list[Step], list[int]]] = []  # episodes played, reward not yet known
        self._state: dict[str, Any] = {}
        self._ruled_out_cache: dict[tuple[tuple[int, ...], ...], torch.Tensor] = {}
        self._last_probs: dict[str, list[float]] | None = {}  # None: not yet computed from _update_probs
        self._update_probs: list[tuple[list[Position], torch.Tensor]] = []  # the last update's, see _score
        self._positions: list[tuple[str, list[str], list[float]]] | None = []  # from _update_probs when asked
        self._greedy: tuple[float | None] | None = None  # (greedy_probability(),) once computed for these weights
        # the steps (decision, layer, source, mask) of the episodes played, for the greedy decode: by depth token
        # where the depth is chosen, else one (key None); None once the steps were not those (no greedy decode)
        self._layouts: dict[int | None, tuple[tuple[int, int, int, tuple[int, ...]], ...]] | None = {}
        self.updates = 0  # REINFORCE steps taken (the search's staleness counts them)

    def _log_probs(self, logits: torch.Tensor, ruled_out: torch.Tensor) -> torch.Tensor:
        """Shaped, masked log-probabilities over the last dimension (K actions); -inf where ``ruled_out``."""
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.tanh_constant:
            logits = self.tanh_constant * torch.tanh(logits)
        return torch.log_softmax(logits.masked_fill(ruled_out, float("-inf")), dim=-1)

    def _step_probs(self, state: dict[str, Any], step: Step) -> torch.Tensor:
        """The probabilities (K,) of the choices at ``step``, advancing the acting ``state`` (no gradients:
        numpy underneath)."""
        logits = torch.from_numpy(self.net.step(state, step))
        return self._log_probs(logits, self._ruled_out((step[4],))[0]).exp()

    def _ruled_out(self, masks: tuple[tuple[int, ...], ...]) -> torch.Tensor:
        """Boolean tensor (T, K) of the choices each step's action mask rules out, built once per layout."""
        if masks not in self._ruled_out_cache:
            self._ruled_out_cache[masks] = torch.tensor(masks) == 0
        return self._ruled_out_cache[masks]

    def proposals_per_round(self) -> int:
        return self.batch_size - len(self.pending)  # the episodes of one update are sampled from one policy

    def start_episode(self) -> None:
        self._state = self.net.initial_state()
        self._proposed.append(([], []))

    @staticmethod
    def step_of(obs: dict[str, Any]) -> Step:
        """The step an observation of the token protocol describes."""
        return (
            int(obs["decision"]),
            int(obs["layer"]),
            int(obs["source"]),
            int(obs["prev_token"]),
            tuple(int(m) for m in obs["action_mask"]),
        )

    def act(self, obs: dict[str, Any]) -> int:
        step = self.step_of(obs)
        action = self._draw(self._step_probs(self._state, step))
        steps, actions = self._proposed[-1]
        steps.append(step)
        actions.append(action)
        return action

    def _draw(self, probs: torch.Tensor) -> int:
        """A choice drawn from ``probs`` (K,) with the policy's generator."""
        return int(self.draw_rows(probs.numpy()[None])[0])

    def draw_rows(self, probs: np.ndarray) -> np.ndarray:
        """One choice per row of ``probs`` (B, K), drawn with the policy's generator."""
        cdf = np.cumsum(probs.astype(np.float64), axis=1)
        u = torch.rand(len(probs), generator=self.generator, dtype=torch.float64).numpy()
        # inverse CDF: never lands on a p = 0 choice; the clip guards against u * cdf[-1] rounding up to cdf[-1]
        drawn = (cdf <= (u * cdf[:, -1])[:, None]).sum(1)
        last_valid = probs.shape[1] - 1 - (probs[:, ::-1] > 0).argmax(1)
        return np.minimum(drawn, last_valid)

    def discard_episode(self) -> None:
        self._proposed.pop()

    def end_episode(self, reward: float, info: dict[str, Any]) -> dict[str, float]:
        # the proposal with these tokens, oldest first: results may come back in another order (search.mode=async)
        tokens = [int(t) for t in info["tokens"]]
        at = next((i for i, (_, actions) in enumerate(self._proposed) if actions == tokens), None)
        if at is None:
            raise ValueError(f"end_episode got tokens {tokens}, which this policy did not propose")
        steps, actions = self._proposed.pop(at)
        self._remember_layout(steps, actions)
        self.pending.append((steps, actions, float(reward)))
        if len(self.pending) < self.batch_size:
            return {}
        episodes = [(s, a) for s, a, _ in self.pending + self.best_episodes]
        m = len(self.pending)
        log_probs, entropies, self._update_probs = self._score(episodes, for_stats=m)
        self._last_probs = self._positions = self._greedy = None  # computed when asked (TensorBoard, checkpoints)
        metrics = self.reinforce.update(
            log_probs[:m],
            entropies[:m],
            [r for _, _, r in self.pending],
            replay_log_probs=log_probs[m:] if self.best_episodes else None,
            replay_rewards=[r for _, _, r in self.best_episodes],
        )
        metrics |= self._normalised_entropy()
        self._keep_best(self.pending)
        self.pending = []
        self.updates += 1
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

    def _score(
        self, episodes: list[tuple[list[Step], list[int]]], for_stats: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[list[Position], torch.Tensor]]]:
        """Summed log-probability and entropy (shape (N,), with gradients) of each episode under the current
        weights; episodes that share a layout run as one batch. Also returns, per batch, the position of
        each step and the probabilities (T, B', K) that the first ``for_stats`` episodes were given."""
        groups: dict[tuple, list[int]] = {}
        for i, (steps, _) in enumerate(episodes):
            groups.setdefault(tuple((d, layer, src, mask) for d, layer, src, _, mask in steps), []).append(i)
        order, log_probs, entropies, probs = [], [], [], []
        for layout, members in groups.items():
            inputs = torch.tensor([self._inputs(episodes[i][0]) for i in members]).T  # (T, B)
            actions = torch.tensor([episodes[i][1] for i in members]).T  # (T, B)
            logits = self.net.replay([step[:3] for step in layout], inputs)
            log_p = self._log_probs(logits, self._ruled_out(tuple(step[3] for step in layout)).unsqueeze(1))
            p = log_p.exp()
            log_probs.append(log_p.gather(2, actions.unsqueeze(2)).squeeze(2).sum(0))
            # masked_fill, not torch.where: 0 * -inf must not leak NaN into the gradient
            entropies.append(-(p * log_p.masked_fill(p == 0, 0.0)).sum((0, 2)))
            order.extend(members)
            stats = [b for b, i in enumerate(members) if i < for_stats]
            if stats:
                positions = [(d, layer, src, sum(mask)) for d, layer, src, mask in layout]
                probs.append((positions, p.detach()[:, stats]))
        log_prob, entropy = torch.cat(log_probs), torch.cat(entropies)
        if len(groups) > 1:  # back to the order of ``episodes``
            inverse = torch.tensor(order).argsort()
            log_prob, entropy = log_prob[inverse], entropy[inverse]
        return log_prob, entropy, probs

    def _inputs(self, steps: list[Step]) -> list[int]:
        """The embedding rows an episode's steps read (what :meth:`LSTMController.step` looked up)."""
        prev_types = [None, *(step[0] for step in steps[:-1])]
        return [self.net.input_index(prev, step[3]) for prev, step in zip(prev_types, steps)]

    def choice_probabilities(self) -> dict[str, list[float]]:
        if self._last_probs is None:
            rows: dict[int, list[torch.Tensor]] = {}
            for positions, p in self._update_probs:
                for t, (decision, *_) in enumerate(positions):
                    rows.setdefault(decision, []).append(p[t])
            self._last_probs = {
                self.spec.decision_names[d]: torch.cat(ps).mean(0)[: len(self.spec.choice_labels[d])].tolist()
                for d, ps in rows.items()
            }
        return self._last_probs

    def _normalised_entropy(self) -> dict[str, float]:
        """``entropy_normalised``: the mean over the update's episodes of the mean over their decisions of
        entropy / log(valid choices), decisions with one valid choice left out: 1 for a uniform policy, 0 for
        a converged one, whatever the depth sampled (``entropy``, summed over the decisions, follows it)."""
        per_episode = []
        for positions, p in self._update_probs:
            valid = torch.tensor([position[3] for position in positions], dtype=p.dtype)
            keep = valid > 1
            if keep.any():
                entropy = torch.special.entr(p[keep]).sum(-1)  # (T', B'): 0 * log 0 counts 0
                per_episode.append((entropy / valid[keep].log().unsqueeze(1)).mean(0))
        return {"entropy_normalised": float(torch.cat(per_episode).mean())} if per_episode else {}

    def position_probabilities(self) -> list[tuple[str, list[str], list[float]]]:
        if self._positions is None:
            rows: dict[Position, list[torch.Tensor]] = {}
            for positions, p in self._update_probs:
                for t, position in enumerate(positions):
                    rows.setdefault(position, []).append(p[t])
            names, kinds = self.spec.decision_names, self.spec.decision_kinds
            # emission order: the depth, then per layer its skips, its own decisions, its input
            order = sorted(rows, key=lambda q: (names[q[0]] != "depth", q[1], kinds[q[0]] != "skip", q[0], q[2]))
            charts: dict[str, tuple[list[str], list[float]]] = {}
            for decision, layer, source, valid in order:
                mean = torch.cat(rows[decision, layer, source, valid]).mean(0)
                name = names[decision]
                if kinds[decision] == "skip":  # one line per earlier layer: P(it feeds this layer)
                    labels, probs = charts.setdefault(f"layer {layer} / skip", ([], []))
                    labels.append(f"from {source - 1}")
                    probs.append(float(mean[1]))
                else:
                    label = name if name == "depth" else f"layer {layer} / {name}"
                    charts[label] = (list(self.spec.choice_labels[decision][:valid]), mean[:valid].tolist())
            self._positions = [(label, labels, probs) for label, (labels, probs) in charts.items()]
        return self._positions

    def greedy_probability(self) -> float | None:
        """Decoded with :meth:`LSTMController.step` under the weights of now, taking the likeliest choice at
        each step, along the steps that episodes of the greedy depth had (a space's steps are fixed by its
        depth): None before an episode of that depth was played, and for an environment whose steps are not
        fixed by a first ``depth`` decision."""
        if self._greedy is None:
            self._greedy = (self._greedy_decode(),)
        return self._greedy[0]

    def _greedy_decode(self) -> float | None:
        decoded = self.decode_along_layouts(1, lambda p: p.argmax(-1))
        return decoded[0][2] if decoded else None

    def decode_along_layouts(
        self, count: int, choose: Callable[[np.ndarray], np.ndarray]
    ) -> list[tuple[list[Step], list[int], float]]:
        """``count`` episodes decoded at once without the environment, along the steps that the episodes played
        so far took (a space's steps are fixed by its depth): at each step ``choose`` picks one choice per
        episode from their probabilities (B, K). Returns each episode's steps, choices and probability, leaving
        out those whose depth was never played; nothing for an environment whose steps are not fixed by a
        first ``depth`` decision."""
        if not self._layouts:
            return []
        first = next(iter(self._layouts.values()))[0]  # every episode starts with the same step
        state = self.net.initial_state()
        tokens = np.full(count, self.spec.num_actions)
        probs = self._batch_probs(state, first, tokens)
        tokens = choose(probs)
        chosen = probs[np.arange(count), tokens]
        decoded = []
        for first_token in np.unique(tokens):
            layout = self._layouts.get(self._layout_key(first[0], int(first_token)))
            if layout is None:
                continue
            members = np.flatnonzero(tokens == first_token)
            group = {**state, "anchors": {j: a[members] for j, a in state["anchors"].items()}}
            group["hc"] = [(h[members], c[members]) for h, c in state["hc"]]
            prev, probability = tokens[members], chosen[members].astype(np.float64)
            columns = [prev]
            for position in layout[1:]:
                p = self._batch_probs(group, position, prev)
                prev = choose(p)
                probability *= p[np.arange(len(prev)), prev]
                columns.append(prev)
            actions = np.stack(columns, 1)
            prev_tokens = np.concatenate([np.full((len(members), 1), self.spec.num_actions), actions[:, :-1]], 1)
            for b, i in enumerate(members):
                steps = [(d, layer, src, int(t), mask) for (d, layer, src, mask), t in zip(layout, prev_tokens[b])]
                decoded.append((i, (steps, [int(a) for a in actions[b]], float(probability[b]))))
        return [episode for _, episode in sorted(decoded, key=lambda item: item[0])]

    def _batch_probs(self, state: dict[str, Any], position: tuple[int, int, int, tuple[int, ...]],
                     prev_tokens: np.ndarray) -> np.ndarray:  # fmt: skip
        """Probabilities (B, K) of the choices at ``position`` (decision, layer, source, mask), advancing the
        batched ``state``; shaped and masked as :meth:`_log_probs` does."""
        logits = torch.from_numpy(self.net.step_batch(state, position[:3], prev_tokens))
        return self._log_probs(logits, self._ruled_out((position[3],))).exp().numpy()

    def _layout_key(self, first_decision: int, first_token: int) -> int | None:
        return first_token if self.spec.decision_names[first_decision] == "depth" else None

    def _remember_layout(self, steps: list[Step], actions: list[int]) -> None:
        """Record the steps of an episode by its depth, for :meth:`greedy_probability`."""
        if self._layouts is None or not steps:
            return
        layout = tuple((d, layer, src, mask) for d, layer, src, _, mask in steps)
        if self._layouts.setdefault(self._layout_key(steps[0][0], actions[0]), layout) != layout:
            self._layouts = None  # this environment's steps depend on more than the depth

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "reinforce": self.reinforce.state_dict(),
            "generator": self.generator.get_state(),
            "pending": self.pending,
            "best_episodes": self.best_episodes,
            "last_probs": self.choice_probabilities(),
            "updates": self.updates,
            "layouts": self._layouts,
            "proposed": self._proposed,  # proposals in flight (an asynchronous search saves between results)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.reinforce.load_state_dict(state["reinforce"])
        self.generator.set_state(state["generator"])
        self.pending = [(list(s), list(a), float(r)) for s, a, r in state["pending"]]
        self.best_episodes = [(list(s), list(a), float(r)) for s, a, r in state.get("best_episodes", [])]
        self._last_probs = state["last_probs"]
        self.updates = int(state.get("updates", 0))
        self._layouts = state.get("layouts", {})
        self._positions, self._greedy = [], (None,)  # as before the first update: nothing until the next one
        self._proposed = [(list(s), list(a)) for s, a in state.get("proposed", [])]
