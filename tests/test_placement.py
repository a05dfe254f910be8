"""Tests of gga_jax.placement against docs/spec.md §4, with references computed here."""

import math
import re

import numpy as np
import pytest

from gga_jax import graph, placement

INF = math.inf


def damp(s, edge, gamma):
    """Multiplies every finite score by 1 - gamma^(distance to edge), in place."""
    k, m = edge
    for i in range(len(s)):
        for j in range(len(s)):
            if s[i][j] != -INF:
                s[i][j] *= 1 - gamma ** (abs(i - k) + abs(j - m))


def reference_gga(scores, num, gamma, before=()):
    """docs/spec.md §4 Algorithm 1 as a plain-Python loop over lists of lists.

    The edges `before` were picked already: damped around first, never picked again.
    """
    n = len(scores)
    s = [[float(x) for x in row] for row in scores]
    available = [[x != -INF for x in row] for row in s]
    for edge in before:
        available[edge[0]][edge[1]] = False
        damp(s, edge, gamma)
    picked = []
    for _ in range(num):
        best = None
        for i in range(n):  # Row-major scan with a strict ">" keeps the smallest (i, j).
            for j in range(n):
                if available[i][j] and (best is None or s[i][j] > s[best[0]][best[1]]):
                    best = (i, j)
        picked.append(best)
        available[best[0]][best[1]] = False
        damp(s, best, gamma)
    return picked


def random_scores(rng, n, integer):
    """(n, n) scores, integer-valued (many ties, like sranks) or continuous,
    with about 20% -inf non-candidates and at least one candidate."""
    if integer:
        s = rng.integers(0, 4, size=(n, n)).astype(float)
    else:
        s = rng.normal(size=(n, n))
    s[rng.random((n, n)) < 0.2] = -INF
    s[rng.integers(n), rng.integers(n)] = 1.0
    return s


def tie_breaking_only(s, num) -> bool:
    """True when every candidate scores the same and fewer than all are picked."""
    live = s[np.isfinite(s)]
    return num < live.size and bool(np.all(live == live[0]))


# GGA


@pytest.mark.parametrize("integer", [True, False])
def test_gga_matches_plain_python_reference(integer):
    rng = np.random.default_rng(0 if integer else 1)
    for _ in range(150):
        n = int(rng.integers(1, 10))
        s = random_scores(rng, n, integer)
        num = int(rng.integers(1, np.isfinite(s).sum() + 1))
        gamma = float(rng.choice([0.0, 0.3, 0.6, 0.8, 0.95]))
        if tie_breaking_only(s, num):  # refused: see test_constant_scores_are_refused
            continue
        expected = reference_gga(s.tolist(), num, gamma)
        assert placement.gga(s, num, gamma) == expected, (s, num, gamma)


@pytest.mark.parametrize("policy", [placement.gga, placement.top_k])
@pytest.mark.parametrize("fill", [0.0, 3.0])
def test_constant_scores_are_refused(policy, fill):
    # A zero head gives zero gradients, so every srank is 0: picking 6 of 25 edges
    # would then be row-major tie-breaking, not a placement.
    s = np.full((5, 5), fill)
    s[0, 4] = -INF
    with pytest.raises(ValueError, match=f"all 24 candidate scores equal {fill:g}.*head"):
        policy(s, 6)
    assert len(policy(s, 24)) == 24  # all of them: nothing is chosen, nothing to refuse


def test_gga_hand_checked_3x3():
    # gamma = 0.5. Pick (2, 2) = 8; damped: (0, 1) 4 * 7/8 = 3.5, (0, 2) 4 * 3/4 = 3,
    # (2, 0) 3 * 3/4 = 2.25, (1, 0) 1 * 7/8. Pick (0, 1) = 3.5; damped: (0, 2) 3 * 1/2
    # = 1.5, (2, 0) 2.25 * 7/8 = 1.96875, (1, 0) 0.875 * 3/4. Pick (2, 0).
    s = [[0, 4, 4], [1, 0, 0], [3, 0, 8]]
    assert placement.gga(s, 3, gamma=0.5) == [(2, 2), (0, 1), (2, 0)]
    assert placement.top_k(s, 3) == [(2, 2), (0, 1), (0, 2)]


def test_gga_spreads_ties_by_smallest_edge():
    # All equal: (0, 0) wins the tie; (1, 1) is then farthest (factor 3/4 vs 1/2);
    # after it, (0, 1) and (1, 0) tie at 1/4 and (0, 1) is smaller.
    assert placement.gga(np.ones((2, 2)), 4, gamma=0.5) == [(0, 0), (1, 1), (0, 1), (1, 0)]


def test_gga_never_picks_non_candidates():
    s = np.array([[9.0, -INF], [-INF, 1.0]])
    assert placement.gga(s, 2) == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="2 candidates"):
        placement.gga(s, 3)


@pytest.mark.parametrize("fill", [0.0, -1.0])
def test_gga_never_repeats_an_edge(fill):
    s = np.full((5, 5), fill)
    s[1, 3] = -INF
    edges = placement.gga(s, 24)
    assert len(set(edges)) == 24
    assert set(edges) == {(i, j) for i in range(5) for j in range(5)} - {(1, 3)}


def test_gga_with_gamma_zero_is_top_k():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(1, 8))
        s = random_scores(rng, n, integer=bool(rng.integers(2)))
        num = int(rng.integers(1, np.isfinite(s).sum() + 1))
        if not tie_breaking_only(s, num):
            assert placement.gga(s, num, gamma=0.0) == placement.top_k(s, num)


def test_gga_does_not_modify_scores():
    s = np.array([[1.0, 2.0], [3.0, -INF]])
    placement.gga(s, 2)
    np.testing.assert_array_equal(s, [[1.0, 2.0], [3.0, -INF]])


# top-k


# GGA after earlier picks, iterative GGA (docs/spec.md §9)


def random_picked(rng, s):
    """A few distinct edges of s, candidates or not, in random order."""
    n = len(s)
    count = int(rng.integers(0, min(n * n, 4) + 1))
    flat = rng.choice(n * n, size=count, replace=False)
    return [(int(f // n), int(f % n)) for f in flat]


@pytest.mark.parametrize("integer", [True, False])
def test_gga_after_picked_edges_matches_plain_python_reference(integer):
    rng = np.random.default_rng(2 if integer else 3)
    checked = 0
    for _ in range(150):
        n = int(rng.integers(1, 8))
        s = random_scores(rng, n, integer)
        picked = random_picked(rng, s)
        left = int(np.isfinite(s).sum()) - sum(bool(np.isfinite(s[e])) for e in picked)
        if left < 1:
            continue
        num = int(rng.integers(1, left + 1))
        gamma = float(rng.choice([0.0, 0.3, 0.6, 0.95]))
        if tie_breaking_only(s, num + len(picked)):
            continue
        got = placement.gga(s, num, gamma, picked=picked)
        assert got == reference_gga(s.tolist(), num, gamma, picked), (s, num, gamma, picked)
        assert not set(got) & set(picked)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("integer", [True, False])
def test_gga_split_in_two_is_gga_whole(integer):
    rng = np.random.default_rng(4 if integer else 5)
    for _ in range(100):
        n = int(rng.integers(2, 8))
        s = random_scores(rng, n, integer)
        total = int(np.isfinite(s).sum())
        if total < 2:
            continue
        whole = int(rng.integers(2, total + 1))
        first = int(rng.integers(1, whole))
        gamma = float(rng.choice([0.0, 0.3, 0.6, 0.95]))
        if tie_breaking_only(s, first):  # gga(s, first) alone is refused
            continue
        head = placement.gga(s, first, gamma)
        tail = placement.gga(s, whole - first, gamma, picked=head)
        assert head + tail == placement.gga(s, whole, gamma), (s, whole, first, gamma)


def test_gga_picked_non_candidate_only_damps():
    # (0, 1) is no candidate: it is damped around (gamma = 0.5), so (1, 1), at distance 1
    # (factor 1/2, 5 -> 2.5), loses to (1, 0) at distance 2 (factor 3/4, 4 -> 3).
    s = np.array([[-INF, -INF], [4.0, 5.0]])
    assert placement.gga(s, 1, 0.5) == [(1, 1)]
    assert placement.gga(s, 1, 0.5, picked=[(0, 1)]) == [(1, 0)]
    assert placement.gga(s, 2, 0.5, picked=np.array([[0, 1]])) == [(1, 0), (1, 1)]


@pytest.mark.parametrize(
    "picked, message",
    [
        ([(0, 0), (0, 0)], r"lists an edge more than once"),
        ([(0, 2)], r"\(0, 2\) is not a pair of node indices in \[0, 2\)"),
        ([(0, 1.0)], r"\(0, 1.0\) is not a pair"),
        ([(0,)], r"\(0,\) is not a pair"),
        ("ab", r"must be a sequence of \(i, j\) edges"),
    ],
)
def test_gga_bad_picked_raises(picked, message):
    with pytest.raises(ValueError, match=message):
        placement.gga(np.ones((2, 2)), 1, picked=picked)


def test_gga_num_counts_only_the_candidates_left():
    s = np.arange(4.0).reshape(2, 2)
    with pytest.raises(ValueError, match=r"\[1, 2\] \(there are 2 candidates"):
        placement.gga(s, 3, picked=[(0, 0), (1, 1)])
    assert placement.gga(s, 2, picked=[(0, 0), (1, 1)]) == [(1, 0), (0, 1)]


class Recorder:
    """score(placed) from a script of matrices, -inf at placed edges; records every call."""

    def __init__(self, matrices):
        self.matrices, self.scored, self.trained = list(matrices), [], []

    def score(self, placed):
        self.scored.append(list(placed))
        s = np.array(self.matrices[len(self.scored) - 1], float)
        for edge in placed:
            s[edge] = -INF
        return s

    def train(self, placed):
        self.trained.append(list(placed))


@pytest.mark.parametrize("num, k", [(1, 1), (5, 1), (5, 2), (6, 3), (7, 4), (4, 9), (25, 6)])
def test_iterative_without_rescoring_is_gga(num, k):
    s = np.random.default_rng(num * 10 + k).normal(size=(5, 5))
    script = Recorder([s])
    got = placement.iterative_gga(script.score, script.train, num, k, 0.6, rescore=False)
    assert got == placement.gga(s, num, 0.6)
    assert script.scored == [[]] and script.trained == []


@pytest.mark.parametrize("num, k", [(1, 1), (5, 1), (5, 2), (6, 3), (7, 7), (12, 5)])
def test_iterative_follows_the_rescored_matrices(num, k):
    rng = np.random.default_rng(num + 100 * k)
    matrices = [rng.normal(size=(5, 5)) for _ in range(num)]
    matrices[0][2, 3] = -INF  # not a candidate in the first round
    script = Recorder(matrices)
    got = placement.iterative_gga(script.score, script.train, num, k, gamma=0.5)
    # The same rule as a plain loop: each round damps around every earlier pick.
    want, round_ = [], 0
    while len(want) < num:
        s = np.array(matrices[round_], float)
        for edge in want:
            s[edge] = -INF
        want += reference_gga(s.tolist(), min(k, num - len(want)), 0.5, want)
        round_ += 1
    assert got == want and len(set(got)) == num
    rounds = -(-num // k)
    assert len(script.trained) == rounds - 1 and len(script.scored) == rounds
    assert script.trained == script.scored[1:]
    assert [len(p) for p in script.trained] == [k * r for r in range(1, rounds)]


def test_iterative_with_k_at_least_num_is_one_gga_round():
    s = np.random.default_rng(7).normal(size=(5, 5))
    script = Recorder([s])
    assert placement.iterative_gga(script.score, script.train, 4, 4) == placement.gga(s, 4)
    assert script.trained == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num=0, k=1), "num must be a positive integer, got 0"),
        (dict(num=2.0, k=1), "num must be a positive integer, got 2.0"),
        (dict(num=2, k=0), "k must be a positive integer, got 0"),
        (dict(num=2, k=True), "k must be a positive integer, got True"),
        (dict(num=2, k=1, rescore=1), "rescore must be True or False, got 1"),
        (dict(num=2, k=1, gamma=1.0), "gamma must be a real number in"),
        (dict(num=5, k=2), r"\[1, 4\] \(there are 4 candidates"),
    ],
)
def test_iterative_bad_arguments_raise(kwargs, message):
    script = Recorder([np.ones((2, 2)) + np.eye(2)] * 3)
    with pytest.raises(ValueError, match=message):
        placement.iterative_gga(script.score, script.train, **kwargs)
    assert script.trained == []


def test_top_k_orders_by_score_then_edge():
    s = [[2, 5, -INF], [5, 1, 2], [0, 2, 7]]
    assert placement.top_k(s, 6) == [(2, 2), (0, 1), (1, 0), (0, 0), (1, 2), (2, 1)]


# Validation shared by GGA and top-k


@pytest.mark.parametrize("policy", [placement.gga, placement.top_k])
@pytest.mark.parametrize("num", [0, -1, 5, 2.0, True, None])
def test_bad_num_raises(policy, num):
    s = [[1.0, 2.0], [3.0, -INF]]
    with pytest.raises(ValueError, match="3 candidates"):
        policy(s, num)


@pytest.mark.parametrize("policy", [placement.gga, placement.top_k])
@pytest.mark.parametrize("bad, name", [(math.nan, "NaN"), (INF, "inf")])
def test_nan_and_plus_inf_scores_raise(policy, bad, name):
    s = np.zeros((3, 3))
    s[1, 2] = bad
    with pytest.raises(ValueError, match=rf"1 \+?{name} entries at \(1, 2\)"):
        policy(s, 1)


@pytest.mark.parametrize("policy", [placement.gga, placement.top_k])
@pytest.mark.parametrize("shape", [(2, 3), (4,), (2, 2, 2)])
def test_non_square_scores_raise(policy, shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        policy(np.zeros(shape), 1)


@pytest.mark.parametrize("gamma", [1.0, -0.1, 1.5, math.nan, True])
def test_gamma_outside_unit_interval_raises(gamma):
    with pytest.raises(ValueError, match="gamma"):
        placement.gga(np.zeros((2, 2)), 1, gamma=gamma)


# Fixed baselines: the edges docs/spec.md §4 lists, written out for L = 1 and 3.

FIXED = {
    1: {
        "all_parallel": [(0, 1), (1, 2)],
        "ffn_parallel": [(1, 2)],
        "all_sequential": [(1, 1), (2, 2)],
    },
    3: {
        "all_parallel": [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)],
        "ffn_parallel": [(1, 2), (3, 4), (5, 6)],
        "all_sequential": [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)],
    },
}


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("policy", ["all_parallel", "ffn_parallel", "all_sequential"])
def test_fixed_baselines_small(num_layers, policy):
    assert placement.POLICIES[policy](num_layers) == FIXED[num_layers][policy]


def test_fixed_baselines_vit_b():
    # L = 12 (ViT-B): n = 25 nodes.
    parallel = list(zip(range(24), range(1, 25)))
    assert placement.all_parallel(12) == parallel
    assert placement.ffn_parallel(12) == parallel[1::2]
    assert placement.all_sequential(12) == [(k, k) for k in range(1, 25)]
    assert {graph.edge_type(e) for e in placement.all_parallel(12)} == {"parallel"}
    assert {graph.edge_type(e) for e in placement.all_sequential(12)} == {"sequential"}


def test_first_k_and_last_k():
    assert placement.first_k(1, 1) == [(0, 1)]
    assert placement.last_k(1, 1) == [(1, 2)]
    assert placement.first_k(1, 2) == placement.last_k(1, 2) == [(0, 1), (1, 2)]
    assert placement.first_k(3, 2) == [(0, 1), (1, 2)]
    assert placement.last_k(3, 2) == [(4, 5), (5, 6)]
    assert placement.first_k(12, 3) == [(0, 1), (1, 2), (2, 3)]
    assert placement.last_k(12, 3) == [(21, 22), (22, 23), (23, 24)]
    assert placement.first_k(12, 24) == placement.last_k(12, 24) == placement.all_parallel(12)


@pytest.mark.parametrize("policy", [placement.first_k, placement.last_k])
@pytest.mark.parametrize("num", [0, 7, -1, 1.0])
def test_first_k_last_k_bad_num_raises(policy, num):
    with pytest.raises(ValueError, match="6 parallel edges"):
        policy(3, num)


@pytest.mark.parametrize("num_layers", [0, -1, 1.5, True])
def test_bad_num_layers_raises(num_layers):
    with pytest.raises(ValueError, match="num_layers"):
        placement.all_parallel(num_layers)
    with pytest.raises(ValueError, match="num_layers"):
        placement.ffn_parallel(num_layers)


# Random


def test_random_is_deterministic_per_seed():
    assert placement.random_edges(12, 24, seed=3) == placement.random_edges(12, 24, seed=3)


def test_random_varies_across_seeds():
    draws = {tuple(placement.random_edges(12, 24, seed=seed)) for seed in range(10)}
    assert len(draws) == 10


def test_random_draws_unique_edges_from_all_edges_by_default():
    edges = placement.random_edges(2, 25, seed=0)
    assert sorted(edges) == [(i, j) for i in range(5) for j in range(5)]


def test_random_respects_candidates():
    pool = graph.candidates(12, stride=3, recurrent=False)
    for seed in range(20):
        edges = placement.random_edges(12, 10, seed=seed, candidates=pool)
        assert len(set(edges)) == 10
        assert set(edges) <= set(pool)
    assert sorted(placement.random_edges(12, len(pool), seed=0, candidates=pool)) == sorted(pool)


@pytest.mark.parametrize("num", [0, 26])
def test_random_bad_num_raises(num):
    with pytest.raises(ValueError, match="25 candidate edges"):
        placement.random_edges(2, num, seed=0)


@pytest.mark.parametrize("seed", [None, -1, 1.5])
def test_random_bad_seed_raises(seed):
    with pytest.raises(ValueError, match="seed"):
        placement.random_edges(2, 1, seed=seed)


# Single edge


def test_single_canonicalises():
    assert placement.single((np.int64(3), 4)) == [(3, 4)]
    assert type(placement.single(np.array([1, 2]))[0][0]) is int
    assert placement.single([4, 0], num_layers=2) == [(4, 0)]


@pytest.mark.parametrize("edge", ["ab", (1, 2, 3), (1.5, 2), (-1, 2), 7, (True, 1)])
def test_single_rejects_non_pairs(edge):
    with pytest.raises(ValueError, match="edge|Edge"):
        placement.single(edge)


def test_single_checks_the_graph_when_given_num_layers():
    with pytest.raises(ValueError, match="outside"):
        placement.single((3, 4), num_layers=1)


# Dispatch by name


def test_policies_table():
    assert set(placement.POLICIES) == {
        "gga",
        "top_k",
        "random",
        "first_k",
        "last_k",
        "all_parallel",
        "ffn_parallel",
        "all_sequential",
        "single",
    }


def test_place_dispatches():
    s = np.random.default_rng(4).integers(0, 5, size=(7, 7)).astype(float)
    assert placement.place("gga", num_layers=3, num=4, scores=s) == placement.gga(s, 4)
    assert placement.place("gga", num_layers=3, num=4, scores=s, gamma=0.8) == placement.gga(
        s, 4, 0.8
    )
    assert placement.place("top_k", num_layers=3, num=4, scores=s) == placement.top_k(s, 4)
    assert placement.place("random", num_layers=3, num=4, seed=2) == placement.random_edges(3, 4, 2)
    assert placement.place("last_k", num_layers=3, num=2) == [(4, 5), (5, 6)]
    assert placement.place("ffn_parallel", num_layers=3) == [(1, 2), (3, 4), (5, 6)]
    assert placement.place("single", num_layers=3, edge=(6, 0)) == [(6, 0)]


@pytest.mark.parametrize("policy", ["gga", "top_k"])
def test_place_restricts_scores_to_candidates(policy):
    s = np.arange(49.0).reshape(7, 7)  # The highest scores are all recurrent (i > j).
    pool = graph.candidates(3, recurrent=False)
    edges = placement.place(policy, num_layers=3, num=28, scores=s, candidates=pool)
    assert sorted(edges) == sorted(pool)


def test_place_unknown_policy_lists_valid_names():
    with pytest.raises(ValueError, match="all_sequential.*top_k"):
        placement.place("greedy", num_layers=3)


@pytest.mark.parametrize(
    "policy, kwargs, missing",
    [
        ("gga", {"num": 3}, "scores"),
        ("gga", {"scores": np.zeros((7, 7))}, "num"),
        ("top_k", {"num": 3}, "scores"),
        ("random", {}, "num"),
        ("first_k", {}, "num"),
        ("single", {}, "edge"),
    ],
)
def test_place_names_missing_argument(policy, kwargs, missing):
    with pytest.raises(ValueError, match=f"'{missing}'"):
        placement.place(policy, num_layers=3, **kwargs)


def test_place_checks_scores_shape_against_graph():
    with pytest.raises(ValueError, match=r"\(7, 7\)"):
        placement.place("gga", num_layers=3, num=1, scores=np.zeros((5, 5)))


def test_place_rejects_candidates_for_fixed_policies():
    with pytest.raises(ValueError, match="candidates"):
        placement.place("first_k", num_layers=3, num=2, candidates=graph.candidates(3))
