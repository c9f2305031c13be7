"""Recurrent-cell search for language modelling: the space, the corpora, the child, search, resume, retrain."""

from __future__ import annotations

import csv
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import (
    check_env,
    check_reset_options,
    check_reset_return_info_deprecation,
    check_reset_return_type,
    check_reset_seed_determinism,
    check_seed_deprecation,
    check_space_limit,
    data_equivalence,
)
from gymnasium.utils.passive_env_checker import (
    check_action_space,
    check_observation_space,
    data_shares_objects,
    env_reset_passive_checker,
    env_step_passive_checker,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, run_script
from nasrl.env import ChildNetEnv
from nasrl.env.evaluators.data import DataError
from nasrl.env.evaluators.lm import LanguageModelTrainer, evaluate_language_model, train_language_model
from nasrl.env.evaluators.text import EOS, UNK, load_corpus
from nasrl.env.spaces.families.rnn_cell import STANDARD_CELLS, standard_cell
from nasrl.env.spaces.rnn import MAX_STATE_NORM, build_language_model, hidden_size_for
from nasrl.env.spaces.sampling import random_tokens
from nasrl.env.spaces.space import SHIPPED_SPACES, load_space, shipped_spaces
from nasrl.scripts.retrain import LM_NOT_EXPORTED
from nasrl.scripts.retraining import load_model

SHAKESPEARE = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
RECURRENT_SPACES = [s for s in shipped_spaces() if load_space(s).network == "rnn_cell"]
SENTENCES = [
    "the cat sat on the mat",
    "a dog ate the bone and the cat ran",
    "the mat was red and the dog was brown",
    "every cat likes a warm mat",
]
# A child that costs milliseconds: what the search and resume tests train.
TINY_CHILD = {"hidden_size": 8, "max_steps": 3, "batch_size": 2, "bptt": 5, "val_tokens": 60}


def write_ptb(folder: Path) -> Path:
    """Mikolov's Penn Treebank layout: word files, and character files (spaces between characters, _ between words)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", SENTENCES * 20), ("valid", SENTENCES[:2] * 5), ("test", SENTENCES[2:] * 5)):
        (folder / f"ptb.{split}.txt").write_text("".join(f" {line} \n" for line in lines))
        chars = [" ".join(line.replace(" ", "_")) for line in lines]
        (folder / f"ptb.char.{split}.txt").write_text("".join(f"{c}\n" for c in chars))
    return folder


def write_wikitext(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 20), ("valid", 5), ("test", 5)):
        lines = [" = Cats = ", ""] + [line.replace("the", "The") + " ." for line in SENTENCES] * n
        (folder / f"wiki.{split}.tokens").write_text("\n".join(lines) + "\n")
    return folder


def write_text_file(path: Path, lines: int = 200) -> Path:
    path.write_text("".join(f"{SENTENCES[i % 4].capitalize()}, line {i}!\n" for i in range(lines)))
    return path


def lm_env(corpus: Path, space: str = "rnn_cell", **child) -> ChildNetEnv:
    dataset = {"path": str(corpus), "level": "word"}
    return ChildNetEnv(space=space, evaluator=LanguageModelTrainer(dataset=dataset, **{**TINY_CHILD, **child}))


# --- the search space ----------------------------------------------------------------------------------


@pytest.mark.parametrize("space_name", RECURRENT_SPACES)
def test_every_recurrent_space_decodes_random_tokens_into_cells_that_run_forward_and_backward(space_name) -> None:
    space = load_space(space_name)
    rng = np.random.default_rng(0)
    tokens = torch.randint(11, (6, 3))  # (time, batch)
    for _ in range(25):
        arch = space.decode(random_tokens(space, rng))
        for layers in (1, 2):
            model = build_language_model(arch, vocab_size=11, hidden_size=8, num_layers=layers)
            logits, state = model(tokens, model.initial_state(3))
            assert logits.shape == (6, 3, 11) and len(state) == layers
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
            grads = [p.grad for p in model.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), arch.describe()


def test_the_cell_follows_the_enas_equations() -> None:
    """Two nodes, node 1 reading node 0: h_t is node 1 (the only loose end), computed by hand."""
    space = load_space({"name": "two", "network": "rnn_cell", "depth": 2, "node_inputs": True,
                        "layer": [{"name": "activation", "choices": ["tanh", "relu"]}]})  # fmt: skip
    arch = space.decode([0, 1, 0])  # node 0 tanh; node 1 relu, reading node 0
    assert arch.inputs == [(), (0,)] and arch.describe() == "0:[activation=tanh](in) 1:[activation=relu](0)"
    model = build_language_model(arch, vocab_size=5, hidden_size=4)
    cell = model.cells[0]
    x, h = torch.randn(1, 2, 4), torch.randn(2, 4)
    out, _ = cell(x, h)
    c0, g0 = (x[0] @ cell.w_x.weight.t() + h @ cell.w_h[0].weight.t()).chunk(2, -1)
    h0 = torch.sigmoid(c0) * torch.tanh(g0) + (1 - torch.sigmoid(c0)) * h
    c1, g1 = (h0 @ cell.w_h[1].weight.t()).chunk(2, -1)
    h1 = torch.sigmoid(c1) * torch.relu(g1) + (1 - torch.sigmoid(c1)) * h0
    torch.testing.assert_close(out[0], h1)


def test_an_unbounded_cell_keeps_its_state_within_enas_norm() -> None:
    arch = load_space("rnn_cell_small").decode([2, 2, 0, 2, 0, 2, 1, 2, 3])  # identity everywhere
    model = build_language_model(arch, vocab_size=7, hidden_size=16)
    with torch.no_grad():
        for p in model.cells[0].parameters():
            p.mul_(50)  # the state would grow without bound
        out, _ = model.cells[0](torch.randn(30, 4, 16), torch.zeros(4, 16))
    norms = out.norm(dim=-1)
    assert norms.max() <= MAX_STATE_NORM * (1 + 1e-5) and norms[-1].min() > MAX_STATE_NORM / 2


def test_input_choices_beyond_the_earlier_nodes_are_masked_and_refused(tmp_path) -> None:
    env = lm_env(write_text_file(tmp_path / "t.txt"))
    obs, _ = env.reset(seed=0)
    seen = []
    while True:
        decision = env.decision_types[int(obs["decision"])]
        valid = int(obs["action_mask"].sum())
        if decision.name == "input":
            seen.append((int(obs["layer"]), valid))
            with pytest.raises(ValueError, match=f"valid actions are 0..{valid - 1}"):
                env.step(valid) if valid < env.num_actions else env.step(env.num_actions)
        obs, _, done, _, _ = env.step(valid - 1)  # the last valid choice
        if done:
            break
    assert seen == [(node, node) for node in range(1, 12)]  # node l chooses among the l nodes before it


def test_a_recurrent_space_file_is_checked(tmp_path) -> None:
    from nasrl.env.spaces.space import SpaceError

    bad = {"name": "b", "network": "rnn_cell", "depth": 3, "layer": [{"name": "activation", "choices": ["tanh"]}]}
    with pytest.raises(SpaceError, match="node_inputs"):
        load_space(bad)
    with pytest.raises(SpaceError, match="'elu'"):
        load_space({**bad, "node_inputs": True, "layer": [{"name": "activation", "choices": ["tanh", "elu"]}]})
    assert (SHIPPED_SPACES / "rnn_cell.yaml").is_file() and (SHIPPED_SPACES / "rnn_cell_small.yaml").is_file()
    assert load_space("rnn_cell").size() == 4**12 * math.factorial(11)  # ENAS's 12 nodes
    assert load_space("rnn_cell_small").size() == 4**5 * math.factorial(4)


def test_the_twelve_node_space_decodes_every_node_reading_an_earlier_one() -> None:
    space = load_space("rnn_cell")
    rng = np.random.default_rng(0)
    for _ in range(20):
        tokens = random_tokens(space, rng)
        arch = space.decode(tokens)
        assert len(tokens) == 1 + 2 * 11 and len(arch.layers) == 12  # node 0's activation, then (activation, input)
        activations = [space.layer_decisions[0].choices[t] for t in [tokens[0], *tokens[1::2]]]
        assert [layer["activation"] for layer in arch.layers] == activations
        assert arch.inputs == [(), *((t,) for t in tokens[2::2])]  # node l's input token names the node it reads
        assert all(node_input < node for node, (node_input,) in enumerate(arch.inputs[1:], start=1))


def test_check_env_passes_on_the_five_node_language_model_env(tmp_path) -> None:
    check_env(lm_env(write_text_file(tmp_path / "t.txt"), space="rnn_cell_small"))


def test_the_twelve_node_env_keeps_the_gymnasium_contract_with_masked_actions(tmp_path) -> None:
    """check_env steps with unmasked samples of Discrete(11), which an activation step (4 choices) refuses; the same
    checks, one by one, with every step's action drawn from ``obs["action_mask"]``, over whole episodes."""
    env = lm_env(write_text_file(tmp_path / "t.txt"))
    assert env.action_space.n == 11
    check_action_space(env.action_space)
    check_observation_space(env.observation_space)
    check_space_limit(env.action_space, "action")
    check_space_limit(env.observation_space, "observation")
    check_seed_deprecation(env)
    check_reset_return_info_deprecation(env)
    check_reset_return_type(env)
    check_reset_seed_determinism(env)
    check_reset_options(env)
    env_reset_passive_checker(env)

    def episode(seed: int) -> list[tuple]:
        rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed)
        calls = [(obs, info)]
        steps = []
        while True:
            action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
            obs, reward, terminated, truncated, info = env_step_passive_checker(env, action)
            assert obs in env.observation_space and not truncated
            calls.append((obs, info))
            steps.append((action, obs, reward, terminated, info))
            if terminated:
                break
        for (obs_1, info_1), (obs_2, info_2) in combinations(calls, 2):  # check_returned_data_not_reused's check
            assert not data_shares_objects(obs_1, obs_2) and not data_shares_objects(info_1, info_2)
        return steps

    first = episode(seed=3)
    assert len(first) == 23 and first[-1][3] and all(step[2] == 0.0 for step in first[:-1])
    # check_step_determinism, over a whole episode: all but the wall-clock time, and the second is from the cache
    again = episode(seed=3)
    assert again[-1][4]["cached"] and not first[-1][4]["cached"]
    for steps in (first, again):
        for key in ("cached", "train_seconds"):
            steps[-1][4].pop(key)
    assert data_equivalence(first, again, exact=True)
    assert [step[0] for step in episode(seed=4)] != [step[0] for step in first]


# --- corpora -----------------------------------------------------------------------------------------


def test_penn_treebank_layout_at_word_and_character_level(tmp_path) -> None:
    folder = write_ptb(tmp_path / "ptb")
    words = load_corpus(str(folder), level="word", vocab_size=6)
    assert words.name == "ptb-word" and words.vocab[0] == UNK and len(words.vocab) == 6
    assert words.vocab[1:3] == ["the", EOS]  # most frequent first
    assert len(words.train) == sum(len(s.split()) + 1 for s in SENTENCES) * 20
    assert (words.train == 0).any()  # words beyond the cap are <unk>
    chars = load_corpus(str(folder), level="char")
    assert chars.name == "ptb-char" and "_" in chars.vocab and " " not in chars.vocab
    assert len(chars.test) == sum(len(s) + 1 for s in SENTENCES[2:]) * 5


def test_wikitext2_layout_at_word_and_character_level(tmp_path) -> None:
    folder = write_wikitext(tmp_path / "wikitext-2")
    words = load_corpus(str(folder))
    assert words.name == "wikitext2-word" and "The" in words.vocab and "=" in words.vocab
    chars = load_corpus(str(folder), level="char")
    assert set("Cats") <= set(chars.vocab) and EOS in chars.vocab


def test_a_text_file_is_split_at_line_boundaries_90_5_5(tmp_path) -> None:
    corpus = load_corpus(str(write_text_file(tmp_path / "t.txt", lines=200)), level="char")
    total = len(corpus.train) + len(corpus.val) + len(corpus.test)
    assert 0.88 < len(corpus.train) / total < 0.92 and len(corpus.val) > 0.03 * total
    words = load_corpus(str(tmp_path / "t.txt"))
    assert "," in words.vocab and "the" in words.vocab and "The" not in words.vocab  # lower-cased, punctuation split


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs ../shared/data/text/tinyshakespeare.txt")
def test_the_default_corpus_loads_at_both_levels() -> None:
    words, chars = load_corpus(str(SHAKESPEARE)), load_corpus(str(SHAKESPEARE), level="char")
    assert words.vocab_size == 10000 and 250_000 < len(words.train) < 280_000
    assert chars.vocab_size == 66 and 990_000 < len(chars.train) < 1_010_000


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist"),
        ("binary", "not UTF-8"),
        ("nul", "NUL bytes"),
        ("empty", "holds 0 tokens"),
        ("ptb_missing_test", "missing \\['ptb.test.txt'\\]"),
        ("unknown_folder", "neither ptb.train.txt"),
    ],
)
def test_a_missing_or_malformed_corpus_is_refused_in_one_line(tmp_path, case, expected) -> None:
    path = tmp_path / "corpus.txt"
    if case == "binary":
        path.write_bytes(bytes(range(256)) * 10)
    elif case == "nul":
        path.write_text("the cat\x00sat\n" * 50)
    elif case == "empty":
        path.write_text("\n" * 100)
    elif case == "ptb_missing_test":
        path = write_ptb(tmp_path / "ptb")
        (path / "ptb.test.txt").unlink()
    elif case == "unknown_folder":
        path = tmp_path
    with pytest.raises(DataError, match=expected) as info:
        load_corpus(str(path))
    assert "\n" not in str(info.value)


# --- the child -----------------------------------------------------------------------------------------


def test_a_child_learns_and_its_score_is_zoph_and_les_reward(tmp_path) -> None:
    corpus = load_corpus(str(write_ptb(tmp_path / "ptb")))
    trainer = LanguageModelTrainer(corpus, hidden_size=16, max_steps=60, batch_size=4, bptt=8, lr=1e-2)
    arch = load_space("rnn_cell").decode([0] * 23)  # ENAS's 12 nodes, all tanh, each reading node 0
    assert len(arch.layers) == 12
    torch.manual_seed(0)
    untrained = build_language_model(arch, corpus.vocab_size, 16)
    before = math.exp(evaluate_language_model(untrained, corpus.val)[0])
    result = trainer.evaluate(arch, seed=1)
    ppl = result.metrics["val_perplexity"]
    assert not result.failed and ppl < 0.75 * before  # it learned something of the toy language
    assert result.score == pytest.approx(1e4 / ppl**2) and result.reward_input == result.score
    assert trainer.evaluate(arch, seed=1).metrics == result.metrics  # one seed, one result


def test_a_diverging_child_is_a_recorded_failure(tmp_path) -> None:
    env = lm_env(write_text_file(tmp_path / "t.txt"), optimizer="sgd", lr=1e30, grad_clip=1e30, max_steps=20)
    env.reset(seed=0)
    for token in [2] + [2, 0] * 11:  # identity everywhere; steps of 1e30 overflow the weights
        _, reward, done, _, info = env.step(token)
    assert done and info["failed"] and reward == env.failure_reward
    assert "non-finite" in info["reason"] or "loss became" in info["reason"]


def test_equal_parameter_budgets_size_each_cell() -> None:
    arch = load_space("rnn_cell").decode([0] * 23)
    for cell in (arch, *(standard_cell(c) for c in STANDARD_CELLS)):
        hidden = hidden_size_for(cell, vocab_size=500, params=60_000)
        count = sum(p.numel() for p in build_language_model(cell, 500, hidden).parameters())
        assert abs(count - 60_000) < 0.05 * 60_000, (cell.network, hidden, count)


def test_the_standard_cells_train_in_the_same_loop(tmp_path) -> None:
    corpus = load_corpus(str(write_ptb(tmp_path / "ptb")))
    for name in STANDARD_CELLS:
        model = build_language_model(standard_cell(name), corpus.vocab_size, 8)
        assert train_language_model(model, corpus.train, steps=3, batch_size=2, bptt=5) == ""


# --- end to end: search, resume, retrain ------------------------------------------------------------------


def lm_search(run: Path, corpus: Path, *overrides: str) -> None:
    child = [f"env.evaluator.{k}={v}" for k, v in TINY_CHILD.items()]
    result = run_script(
        "train.py", "env=lm", f"env.evaluator.dataset.path={corpus}", *child, "search.progress=false",
        f"hydra.run.dir={run}", *overrides, cwd=run.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def rows(run: Path) -> list[dict]:
    with open(run / "history.csv") as fh:
        return [{k: v for k, v in r.items() if k not in ("seconds", "cached")} for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_a_language_model_search_writes_a_run_folder_resumes_exactly_and_retrains_on_words_then_chars(tmp_path) -> None:
    corpus = write_text_file(tmp_path / "corpus.txt", lines=300)
    # the run folder, resume and retraining, on the 5-node space: a 12-node cell's episodes and retraining cost
    # more and prove nothing more here (the 12-node space has its own decoding, training and contract tests)
    common = ["controller.batch_size=2", "seed=4", "env.space=rnn_cell_small"]
    lm_search(tmp_path / "full", corpus, "search.budget=6", *common)
    history = rows(tmp_path / "full")
    assert len({r["tokens"] for r in history}) == 6
    assert all("val_perplexity" in json.loads(r["metrics"]) for r in history)
    best = json.loads((tmp_path / "full" / "best.json").read_text())
    assert best["reward"] == max(float(r["reward"]) for r in history)
    tb = EventAccumulator(str(tmp_path / "full" / "tb"))
    tb.Reload()
    assert {"child/val_perplexity", "search/reward", "controller/entropy"} <= set(tb.Tags()["scalars"])

    lm_search(tmp_path / "part", corpus, "search.budget=2", *common)  # stops after one update
    lm_search(tmp_path / "part", corpus, f"resume={tmp_path / 'part'}", "search.budget=6")
    assert rows(tmp_path / "part") == history

    recipe = ["lm.epochs=1", "lm.params=null", "lm.hidden_size=8", "lm.batch_size=4", "lm.bptt=5"]
    for name, extra, metric in (("words", [], "test_perplexity"), ("chars", ["dataset={level:char}"], "test_bpc")):
        out = tmp_path / name
        result = run_script("retrain.py", f"arch={tmp_path / 'full'}", *recipe, *extra, f"hydra.run.dir={out}",
                            cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert LM_NOT_EXPORTED in result.stdout and not (out / "model_scripted.pt").exists()
        summary = json.loads((out / "result.json").read_text())
        assert summary[metric] > 0 and summary["params"] > 0 and summary["tokens"] == best["tokens"]
        assert summary["level"] == name[:-1] and (out / "curve.csv").exists()
        model = load_model(out / "model.pt")
        vocab = torch.load(out / "model.pt", weights_only=True)["vocab"]
        logits, _ = model(torch.zeros(3, 1, dtype=torch.long), model.initial_state(1))
        assert logits.shape == (3, 1, len(vocab))


def test_a_standard_cell_retrains_at_the_parameter_budget(tmp_path) -> None:
    corpus = write_ptb(tmp_path / "ptb")
    out = tmp_path / "lstm"
    result = run_script(
        "retrain.py", "arch=lstm", f"dataset={{path:{corpus}}}", "lm.epochs=1", "lm.params=20000",
        "lm.batch_size=4", "lm.bptt=5", f"hydra.run.dir={out}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "result.json").read_text())
    assert summary["architecture"] == "lstm" and abs(summary["params"] - 20000) < 1000
    assert "test perplexity" in result.stdout


def test_nasrl_train_refuses_a_missing_corpus_in_one_line(tmp_path) -> None:
    result = run_script("train.py", "env=lm", f"env.evaluator.dataset.path={tmp_path / 'nope'}",
                        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: text corpus {tmp_path / 'nope'} does not exist: give a text file, or a folder with the Penn "
        "Treebank (ptb.train.txt, ...) or WikiText-2 (wiki.train.tokens, ...) files"
    ]
