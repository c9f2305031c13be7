"""Neural architecture search with REINFORCE in one file (Zoph & Le 2017, CleanRL style).

An LSTM controller picks an MLP for scikit-learn's 8x8 digits one token at a time (depth, then units and
activation of each layer) through ``nasrl.env.ChildNetEnv``, a plain Gymnasium environment: every step but the
last rewards 0, the last trains the child network and rewards its validation accuracy. The controller learns
with REINFORCE, an exponential moving-average baseline and an entropy bonus. Only the environment comes from
nasrl; the controller and the learning loop are all here.

    python examples/reinforce_minimal.py --seed 0 --episodes 120
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical

from nasrl.env import ChildNetEnv

# 12 + 12**2 + 12**3 = 1884 architectures (12 choices per layer, 1 to 3 layers): small enough to learn in a minute.
SPACE = {
    "name": "mlp_digits",
    "network": "mlp",
    "depth": [1, 2, 3],
    "layer": [
        {"name": "units", "choices": [16, 32, 64, 128]},
        {"name": "activation", "choices": ["relu", "tanh", "sigmoid"]},
    ],
}


class Controller(nn.Module):
    """An LSTM that reads (previous token, kind of decision) and emits logits for the next token.

    One linear head per decision type, as in Zoph & Le: "units" and "activation" choices mean different things,
    so they should not share output weights. Its hidden state carries everything chosen so far.
    """

    def __init__(self, num_actions: int, num_decision_types: int, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = hidden
        self.token_embed = nn.Embedding(num_actions + 1, hidden)  # +1: the "no previous token" of the first step
        self.decision_embed = nn.Embedding(num_decision_types, hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, num_actions) for _ in range(num_decision_types))

    def initial_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, self.hidden), torch.zeros(1, self.hidden)

    def forward(
        self, obs: dict[str, np.ndarray], state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[Categorical, tuple[torch.Tensor, torch.Tensor]]:
        """The distribution over the valid actions of this step, and the next LSTM state."""
        decision = int(obs["decision"])
        x = self.token_embed(torch.tensor([int(obs["prev_token"])])) + self.decision_embed(torch.tensor([decision]))
        h, c = self.cell(x, state)
        logits = self.heads[decision](h).squeeze(0)
        # The action space is as wide as the widest decision: rule out the choices this decision lacks.
        mask = torch.as_tensor(obs["action_mask"], dtype=torch.bool)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        return Categorical(logits=logits), (h, c)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="seeds random, numpy, torch and the environment")
    p.add_argument("--episodes", type=int, default=120, help="architectures to sample (one per episode)")
    p.add_argument("--batch-size", type=int, default=6, help="episodes per controller update")
    p.add_argument("--lr", type=float, default=0.01, help="controller learning rate (Adam)")
    p.add_argument("--entropy", type=float, default=0.01, help="weight of the entropy bonus")
    p.add_argument("--baseline-decay", type=float, default=0.8, help="of the moving-average baseline")
    p.add_argument("--child-epochs", type=int, default=10, help="training epochs of each child network")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # Real training on real (offline) data: each child is an MLP trained for a few epochs on digits. The
    # environment caches results, so an architecture sampled twice is trained once (and scores the same).
    env = ChildNetEnv(space=SPACE, dataset="digits", training={"epochs": args.child_epochs})
    decision_types = env.unwrapped.decision_types
    controller = Controller(int(env.action_space.n), len(decision_types))
    optimizer = torch.optim.Adam(controller.parameters(), lr=args.lr)

    baseline: float | None = None
    best_accuracy, best_architecture = -1.0, ""
    log_probs: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    rewards: list[float] = []

    for episode in range(1, args.episodes + 1):
        # Seed the environment once: later resets continue its random stream, so a seed fixes the whole run
        # (and the child seeds the environment derives from it, which fix each child's training).
        obs, info = env.reset(seed=args.seed if episode == 1 else None)
        state = controller.initial_state()
        log_prob, entropy = torch.zeros(()), torch.zeros(())
        terminated = truncated = False
        while not (terminated or truncated):
            dist, state = controller(obs, state)
            action = dist.sample()
            log_prob = log_prob + dist.log_prob(action)  # log-probability of the whole architecture
            entropy = entropy + dist.entropy()
            obs, reward, terminated, truncated, info = env.step(int(action))
        # Only the last step rewards (the child's validation accuracy), so the episode's return is that reward.
        log_probs.append(log_prob)
        entropies.append(entropy)
        rewards.append(float(reward))
        print(f"episode {episode:4d}  reward {reward:.4f}  {info['architecture']}", flush=True)
        if info["val_accuracy"] > best_accuracy:
            best_accuracy, best_architecture = info["val_accuracy"], info["architecture"]

        if len(rewards) == args.batch_size or episode == args.episodes:
            batch_mean = float(np.mean(rewards))
            # The baseline is the moving average of earlier batches: subtracting it keeps the gradient unbiased
            # and lowers its variance. The first batch has no history, so it is compared with its own mean.
            reference = batch_mean if baseline is None else baseline
            advantages = torch.tensor(rewards) - reference
            loss = -(advantages * torch.stack(log_probs)).mean() - args.entropy * torch.stack(entropies).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            decay = 0.0 if baseline is None else args.baseline_decay
            baseline = decay * (baseline or 0.0) + (1 - decay) * batch_mean
            log_probs, entropies, rewards = [], [], []

    env.close()
    print(f"best architecture: {best_architecture}  val_accuracy {best_accuracy:.4f}")


if __name__ == "__main__":
    main()
