"""docs/spec.md §1: nodes, edge types, validation and candidate sets."""

import numpy as np
import pytest

from gga_jax import graph


def test_num_nodes_is_2l_plus_1():
    assert [graph.num_nodes(L) for L in (1, 3, 12, 40)] == [3, 7, 25, 81]


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3"])
def test_num_nodes_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="num_layers"):
        graph.num_nodes(bad)


@pytest.mark.parametrize(
    "edge,kind",
    [
        ((0, 1), "parallel"),
        ((5, 6), "parallel"),
        ((0, 2), "long_range"),
        ((3, 24), "long_range"),
        ((0, 0), "sequential"),
        ((7, 7), "sequential"),
        ((1, 0), "recurrent"),
        ((24, 3), "recurrent"),
    ],
)
def test_edge_type(edge, kind):
    assert graph.edge_type(edge) == kind


def test_validate_edges_canonicalises_and_keeps_order():
    edges = graph.validate_edges([[3, 1], (np.int64(0), np.int32(6)), np.array([2, 2])], 3)
    assert edges == ((3, 1), (0, 6), (2, 2))
    assert all(type(i) is int and type(j) is int for i, j in edges)


@pytest.mark.parametrize(
    "edges,message",
    [
        ([(0, 7)], r"Edge \(0, 7\) has node 7 outside \[0, 7\)"),
        ([(-1, 2)], r"node -1 outside"),
        ([(0, 1.5)], r"non-integer entry 1.5"),
        ([(True, 1)], r"non-integer entry True"),
        ([(0, 1), (2, 2), (0, 1)], r"Edge \(0, 1\) appears more than once"),
        ([(0, 1, 2)], r"not an \(i, j\) pair"),
        ([5], r"not an \(i, j\) pair"),
        ("01", r"sequence of \(i, j\) pairs"),
    ],
)
def test_validate_edges_names_the_offending_edge(edges, message):
    with pytest.raises(ValueError, match=message):
        graph.validate_edges(edges, 3)


def test_candidates_all_edges_row_major():
    edges = graph.candidates(2)
    assert len(edges) == 25 and edges[:6] == ((0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0))
    assert list(edges) == sorted(edges)


def test_candidates_stride_and_no_recurrent():
    # The paper's Figure 3 grid: ViT-B (25 nodes) with stride 3 gives 9 x 9 = 81 edges.
    grid = graph.candidates(12, stride=3)
    assert len(grid) == 81 and {i for i, _ in grid} == set(range(0, 25, 3))
    forward = graph.candidates(12, recurrent=False)
    assert len(forward) == 25 * 26 // 2 and all(i <= j for i, j in forward)
    with pytest.raises(ValueError, match="stride"):
        graph.candidates(3, stride=0)


def test_candidate_mask():
    mask = graph.candidate_mask([(0, 1), (2, 0)], 1)
    expected = np.zeros((3, 3), bool)
    expected[0, 1] = expected[2, 0] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    "edges,blocks",
    [((), 0), (((0, 1),), 0), (((1, 0),), 1), (((2, 0), (5, 1)), 3), (((6, 6), (4, 2)), 2)],
)
def test_pass1_blocks_is_ceil_of_half_the_largest_recurrent_source(edges, blocks):
    assert graph.pass1_blocks(edges) == blocks


def test_propagate_needs_an_adapt_function_for_edges():
    with pytest.raises(ValueError, match="no adapt function"):
        graph.propagate(0.0, [lambda x: x], ((0, 1),))


def test_propagate_truncates_pass1_at_the_largest_recurrent_source():
    """Counts the steps each pass runs: pass 1 stops at node i_max."""
    calls = []

    def make_step(k):
        def step(x):
            calls.append(k)
            return x + k

        return step

    steps = [make_step(k) for k in range(1, 7)]  # 3 blocks, 7 nodes
    nodes = graph.propagate(1.0, steps, ((3, 1),), adapt=lambda e, x: 10 * x)
    # Pass 1 runs steps 1..3 (2 = ceil(3 / 2) blocks, the second one's MLP is not
    # needed), then pass 2 runs all 6.
    assert calls == [1, 2, 3, 1, 2, 3, 4, 5, 6]
    z3 = 1.0 + 1 + 2 + 3
    x1 = 1.0 + 1 + 10 * z3
    assert nodes[1] == x1 and nodes[6] == x1 + 2 + 3 + 4 + 5 + 6


def test_propagate_shares_the_nodes_before_the_first_target_with_pass1():
    calls = []
    steps = [lambda x, k=k: calls.append(k) or x + k for k in range(1, 7)]
    nodes = graph.propagate(0.0, steps, ((5, 3),), adapt=lambda e, x: 100 * x)
    # Nodes 0-2 are computed once; pass 1 resumes from node 2 up to i_max = 5.
    assert calls == [1, 2, 3, 4, 5, 3, 4, 5, 6]
    assert nodes[3] == 1 + 2 + 3 + 100 * (1 + 2 + 3 + 4 + 5)


def test_propagate_with_given_pass1_values_runs_only_pass2():
    """Cached z_i (pass 1 has no adapters, so z depends on the input only) replace pass 1."""
    calls = []
    steps = [lambda x, k=k: calls.append(k) or x + k for k in range(1, 7)]
    edges = ((3, 1), (6, 0))
    computed = graph.propagate(1.0, steps, edges, adapt=lambda e, x: 10 * x)
    z = {3: 1.0 + 1 + 2 + 3, 6: 1.0 + 1 + 2 + 3 + 4 + 5 + 6}
    calls.clear()
    given = graph.propagate(1.0, steps, edges, adapt=lambda e, x: 10 * x, pass1=z)
    assert calls == [1, 2, 3, 4, 5, 6]
    assert given == computed


def test_given_pass1_values_must_cover_every_recurrent_source():
    with pytest.raises(ValueError, match=r"lacks the recurrent source nodes \[6\]; it has \[3\]"):
        graph.propagate(
            0.0, [lambda x: x] * 6, ((3, 1), (6, 0)), adapt=lambda e, x: x, pass1={3: 0.0}
        )
