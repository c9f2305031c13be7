"""What the framework costs on top of child training, measured side by side in one run.

    python experiments/bench_overhead.py                 # all four, about 8 minutes on 2 cores
    python experiments/bench_overhead.py --only a,b      # a subset

(a) one child trained through the environment (reset, one step per token, the last one trains and
    validates) against a bare PyTorch loop written here that trains the same network, from the same
    initial weights, for the same steps on the same data and validates it: the ratio of wall times.
(b) the LSTM controller's cost per architecture (sampling an episode, the REINFORCE update), and the
    whole loop's (env steps, history, checkpoint, TensorBoard), as a share of one child's training.
(c) architectures per hour with search.workers=2 against 1 (the same random-search architectures).
(d) a second identical search against the same evaluation cache: children trained.

Everything uses the default configuration of conf/ (composed with Hydra); (c) and (d) run random search
because its proposals, unlike REINFORCE with batch size 1, do not wait for results.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from nasrl.controller.build import build_env, build_policy
from nasrl.controller.search import run_search
from nasrl.env.runners import make_runner
from nasrl.env.spaces.networks import build_network
from nasrl.scripts.app import register_configs

# The plain CNN of docs/results/mnist1d.md (4 conv layers of 64 filters, kernel 5, strides 1,2,1,2) in cnn1d tokens.
PLAIN_CNN = [3, 4, 1, 0, 0, 1, 4, 1, 1, 0, 0, 1, 4, 1, 0, 0, 0, 0, 1, 4, 1, 1, 0]


def config(*overrides: str):
    register_configs()
    with initialize_config_module("nasrl.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def bare_loop(env, tokens: list[int], seed: int) -> float:
    """The same training as the environment's child, written as a plain PyTorch loop."""
    trainer = env.unwrapped.evaluator
    data = trainer.dataset
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_network(env.unwrapped.space.decode(tokens), data.input_shape, data.num_classes)
        steps = trainer.total_steps()
        opt = torch.optim.Adam(model.parameters(), lr=trainer.lr, weight_decay=trainer.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        done = 0
        while done < steps:
            order = torch.randperm(len(data.y_train), generator=gen)
            for i in range(0, len(order), trainer.batch_size):
                idx = order[i : i + trainer.batch_size]
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                if done == steps:
                    break
        model.eval()
        with torch.no_grad():
            return float((model(data.x_val).argmax(1) == data.y_val).float().mean())


def through_env(env, tokens: list[int]) -> tuple[float, int]:
    env.reset()
    for t in tokens:
        _, reward, terminated, _, info = env.step(t)
    assert terminated
    return reward, info["child_seed"]


def bench_a(repeats: int) -> float:
    cfg = config()
    env = build_env(cfg.env)  # default env, in-memory cache: cleared below so every repeat trains
    env.reset(seed=0)
    env_times, bare_times = [], []
    for r in range(repeats):
        env.unwrapped.cache._db.execute("DELETE FROM results")
        start = time.perf_counter()
        reward, seed = through_env(env, PLAIN_CNN)
        env_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare = bare_loop(env, PLAIN_CNN, seed)
        bare_times.append(time.perf_counter() - start)
        print(
            f"  repeat {r}: env {env_times[-1]:.2f} s (val {reward:.4f}), bare {bare_times[-1]:.2f} s (val {bare:.4f})"
        )
    ratio = statistics.median(env_times) / statistics.median(bare_times)
    print(
        f"(a) child through the env / bare PyTorch loop: {ratio:.3f} (medians of {repeats}: "
        f"{statistics.median(env_times):.2f} s / {statistics.median(bare_times):.2f} s; target <= 1.10)"
    )
    return statistics.median(bare_times)


def bench_b(child_seconds: float, episodes: int) -> None:
    cfg = config("env=synthetic")  # the default space and controller; the reward is instant, no training
    env = build_env(cfg.env)
    policy = build_policy(cfg.controller, env, seed=0)
    env.reset(seed=0)
    sample = update = 0.0
    for _ in range(episodes):
        obs, _ = env.reset()
        start = time.perf_counter()
        policy.start_episode()
        done = False
        while not done:
            action = policy.act(obs)
            sample += time.perf_counter() - start
            obs, reward, done, _, info = env.step(action)
            start = time.perf_counter()
        policy.end_episode(reward, info)
        update += time.perf_counter() - start
    controller = (sample + update) / episodes
    with tempfile.TemporaryDirectory() as tmp:
        env = build_env(cfg.env)
        policy = build_policy(cfg.controller, env, seed=0)
        start = time.perf_counter()
        state = run_search(env, policy, budget=episodes, max_episodes=10 * episodes, run_dir=tmp, hparams={})
        loop = (time.perf_counter() - start) / state.episode
    print(
        f"(b) controller per architecture: {1000 * controller:.1f} ms (sampling {1000 * sample / episodes:.1f}, "
        f"update {1000 * update / episodes:.1f}) = {100 * controller / child_seconds:.2f}% of one child "
        f"({child_seconds:.2f} s, the plain CNN of (a)); the whole loop with its files: {1000 * loop:.1f} ms "
        f"= {100 * loop / child_seconds:.2f}% (target <= 2%)"
    )


def bench_c(budget: int) -> None:
    rates = {}
    threads = torch.get_num_threads()
    for workers, name in ((1, "workers=1"), (2, "workers=2"), (1, "workers=1, 1 torch thread")):
        cfg = config("controller=random", f"search.workers={workers}")
        env = build_env(cfg.env)
        policy = build_policy(cfg.controller, env, seed=0)
        runner = make_runner(env.unwrapped.evaluator, workers=workers)
        torch.set_num_threads(1 if "thread" in name else threads)
        start = time.perf_counter()
        try:
            state = run_search(
                env, policy, budget=budget, max_episodes=10 * budget, seed=0, runner=runner, workers=workers
            )
        finally:
            runner.close()
        seconds = time.perf_counter() - start
        rates[name] = state.distinct / seconds * 3600
        print(f"  {name}: {state.distinct} architectures in {seconds:.0f} s = {rates[name]:.0f}/hour", flush=True)
    torch.set_num_threads(threads)
    # Two 1-thread workers can at best each go at the 1-thread rate: that is the most workers=2 can gain
    # over one worker that runs each child on both cores.
    ceiling = 2 * rates["workers=1, 1 torch thread"] / rates["workers=1"]
    print(
        f"(c) architectures per hour, workers=2 / workers=1: {rates['workers=2'] / rates['workers=1']:.2f}x "
        f"(target >= 1.7x); against one worker with one torch thread: "
        f"{rates['workers=2'] / rates['workers=1, 1 torch thread']:.2f}x; ceiling on this machine "
        f"(2 x the 1-thread rate / workers=1): {ceiling:.2f}x"
    )


def bench_d(budget: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trained = []
        for _ in range(2):
            cfg = config("controller=random", "env.evaluator.epochs=2", f"env.cache={tmp}/shared.sqlite")
            env = build_env(cfg.env)
            policy = build_policy(cfg.controller, env, seed=0)
            state = run_search(env, policy, budget=budget, max_episodes=10 * budget, seed=0)
            trained.append(sum(1 for r in state.history if not r["cached"] and not r["reused"]))
            env.close()
    print(
        f"(d) children trained: first search {trained[0]}, the same search again on its cache {trained[1]} (target 0)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--repeats", type=int, default=5, help="(a): children trained each way")
    parser.add_argument("--episodes", type=int, default=200, help="(b): episodes of the controller")
    parser.add_argument("--budget", type=int, default=16, help="(c): architectures per search")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    child = bench_a(args.repeats) if "a" in parts or "b" in parts else 0.0
    if "b" in parts:
        bench_b(child, args.episodes)
    if "c" in parts:
        bench_c(args.budget)
    if "d" in parts:
        bench_d(8)


if __name__ == "__main__":
    main()
