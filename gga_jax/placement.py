"""Placement policies of docs/spec.md §4: which edges of the adapter graph get adapters.

GGA (the paper's Algorithm 1) picks edges greedily from a score matrix s of
shape (n, n), n = 2L + 1, damping the scores near each pick so that the chosen
adapters spread over the graph. The baselines (top-k, random, first-k, last-k,
all-parallel, FFN-parallel, all-sequential, single edge) are what the paper
compares it with. Every policy returns an ordered list of unique (int, int)
edges; `place` selects one by name, as configs do. `iterative_gga` (docs/spec.md §9)
alternates GGA rounds with training the placed adapters and re-scoring.

Plain NumPy in float64: placement runs once per experiment on a small matrix,
and exact float64 arithmetic keeps tie-breaking reproducible.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np

from gga_jax import graph

Edge = tuple[int, int]

_MAX_REPORTED = 5  # Positions listed in an error message about bad scores.


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_scores(scores) -> tuple[np.ndarray, np.ndarray]:
    """Returns a float64 copy of `scores` and its candidate mask (finite entries).

    docs/spec.md §4: -inf marks a non-candidate; NaN and +inf have no meaning as a
    score, so they are rejected rather than silently ranked.
    """
    s = np.array(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"scores must be a square (n, n) matrix, got shape {s.shape}.")
    problems = []
    for name, bad in (("NaN", np.isnan(s)), ("+inf", np.isposinf(s))):
        where = [(int(i), int(j)) for i, j in np.argwhere(bad)]
        if where:
            shown = ", ".join(map(str, where[:_MAX_REPORTED]))
            more = " ..." if len(where) > _MAX_REPORTED else ""
            problems.append(f"{len(where)} {name} entries at {shown}{more}")
    if problems:
        raise ValueError(
            f"scores may hold only finite values and -inf (non-candidate); found "
            f"{'; '.join(problems)}."
        )
    return s, np.isfinite(s)


def _check_num(num, available: int, what: str) -> int:
    """Checks that 1 <= num <= available and returns it as an int."""
    if not _is_int(num) or not 1 <= num <= available:
        raise ValueError(
            f"num must be an integer in [1, {available}] (there are {available} {what}), "
            f"got {num!r}."
        )
    return int(num)


def _check_informative(s: np.ndarray, live: np.ndarray, num: int) -> None:
    """Refuses to pick fewer than all candidates when every candidate scores the same.

    The pick would then come from tie-breaking alone (row-major order), which is
    not a placement; a zero head (zero gradients, all scores 0) is the usual cause.
    """
    values = s[live]
    if num < values.size and np.all(values == values[0]):
        raise ValueError(
            f"all {values.size} candidate scores equal {values[0]:g}, so picking {num} of them "
            f"would follow tie-breaking alone; scores from a zero or untrained head are all "
            f"zero: pre-train the head before scoring (docs/spec.md §3 step 1)."
        )


def _check_gamma(gamma) -> float:
    # docs/spec.md §4: gamma in [0, 1). gamma = 1 would zero every score after the
    # first pick; gamma < 0 would make the damping oscillate in sign.
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0 <= gamma < 1:
        raise ValueError(f"gamma must be a real number in [0, 1), got {gamma!r}.")
    return float(gamma)


def _check_picked(picked, n: int) -> list[Edge]:
    """`picked` as a list of (int, int) edges of an n-node graph, without duplicates."""
    if isinstance(picked, (str, bytes)) or not isinstance(picked, (Sequence, np.ndarray)):
        raise ValueError(f"picked must be a sequence of (i, j) edges, got {picked!r}.")
    edges = []
    for edge in picked:
        pair = isinstance(edge, (Sequence, np.ndarray)) and len(edge) == 2
        if not pair or not all(_is_int(v) and 0 <= v < n for v in edge):
            raise ValueError(f"picked edge {edge!r} is not a pair of node indices in [0, {n}).")
        edges.append((int(edge[0]), int(edge[1])))
    if len(set(edges)) != len(edges):
        raise ValueError(f"picked {edges} lists an edge more than once.")
    return edges


def gga(scores, num: int, gamma: float = 0.6, picked: Sequence[Edge] = ()) -> list[Edge]:
    """Greedy Gradient-based Adapter placement (docs/spec.md §4, paper Algorithm 1).

    Repeats `num` times: pick (k, l) = argmax s over the edges not yet picked,
    then multiply s elementwise by d(i, j) = 1 - gamma**(|i - k| + |j - l|).

    Args:
      scores: (n, n) edge scores s(i, j); -inf marks a non-candidate.
      num: number of edges N to place, 1 <= N <= number of candidates left
        after `picked`.
      gamma: damping in [0, 1); larger spreads the picks further. gamma = 0
        is plain top-N.
      picked: edges already placed. Their damping is applied first, in their
        order and with the same float operations as if this call had picked
        them, and they are never picked again (one that is not a candidate is
        only damped around). So gga(s, a) + gga(s, b, picked=gga(s, a)) ==
        gga(s, a + b) exactly; `iterative_gga` continues on re-scored matrices.

    Returns:
      The `num` newly picked edges in the order they were picked.
    """
    s, live = _check_scores(scores)
    n = s.shape[0]
    before = _check_picked(picked, n)
    gamma = _check_gamma(gamma)
    # The constant-scores check sees every pick, earlier ones included, so that
    # splitting a placement in two refuses exactly what the whole one refuses.
    earlier = sum(bool(live[e]) for e in before)
    for edge in before:
        live[edge] = False
    num = _check_num(num, int(live.sum()), "candidates (finite scores) not yet picked")
    _check_informative(s, np.isfinite(s), num + earlier)
    s[~np.isfinite(s)] = 0.0  # Never read (live masks it); avoids -inf * 0 = nan below.
    # The factor depends only on the Manhattan distance, so it is tabulated
    # once with Python's float power: 0.0**0 == 1, so at distance 0 the factor
    # is exactly 0 and gamma = 0 leaves every other score unchanged.
    factor = np.array([1.0 - gamma**dist for dist in range(2 * n - 1)])
    rows, cols = np.indices((n, n))
    for row, col in before:
        s *= factor[np.abs(rows - row) + np.abs(cols - col)]
    new = []
    for _ in range(num):
        # np.argmax returns the first maximum in row-major order, i.e. ties go
        # to the smallest (i, j) (docs/spec.md §4). Picked edges are masked out
        # explicitly: their score is 0 after the damping, which could still be
        # the maximum when the remaining scores are 0 or negative.
        row, col = np.unravel_index(np.argmax(np.where(live, s, -np.inf)), (n, n))
        new.append((int(row), int(col)))
        live[row, col] = False
        # docs/spec.md §4: the distance is to the picked edge (k, l) = (row, col). The
        # paper writes (l, k); that is a typo, since it would not zero the
        # picked edge and could pick it twice.
        s *= factor[np.abs(rows - row) + np.abs(cols - col)]
    return new


def iterative_gga(
    score: Callable[[list[Edge]], np.ndarray],
    train: Callable[[list[Edge]], None],
    num: int,
    k: int,
    gamma: float = 0.6,
    rescore: bool = True,
) -> list[Edge]:
    """Iterative GGA (docs/spec.md §9, the paper's future work): pick k, train, re-score, repeat.

    Each round picks min(k, num - placed) edges with `gga(scores, ...,
    picked=placed)`; while edges remain, train(placed) trains the adapters on
    the placed edges briefly and score(placed) re-scores the candidates on the
    adapted model. The damping of every earlier pick carries over onto the
    re-scored matrices (gga's `picked`), so the picks keep spreading over the
    graph as in one GGA run, while the scores follow the trained adapters.

    Args:
      score: score(placed) -> (n, n) scores with the adapters on `placed`
        trained in place (e.g. scoring.score_edges(..., adapted=True)); -inf
        at non-candidates and at placed edges. First called with [].
      train: train(placed) -> None trains the adapters on those edges.
      num: number of edges N to place, at most the first matrix's candidates.
      k: edges per round; k >= num is plain GGA.
      gamma: gga's damping in [0, 1).
      rescore: False scores once and never trains: exactly gga(score([]), num, gamma).

    Returns:
      The num placed edges, in the order they were picked.
    """
    for name, value in (("num", num), ("k", k)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(rescore, bool):
        raise ValueError(f"rescore must be True or False, got {rescore!r}.")
    _check_gamma(gamma)
    scores = score([])
    _check_num(num, int(_check_scores(scores)[1].sum()), "candidates (finite scores)")
    placed: list[Edge] = []
    while len(placed) < num:
        placed += gga(scores, min(k, num - len(placed)), gamma, picked=placed)
        if rescore and len(placed) < num:
            train(list(placed))
            scores = score(list(placed))
    return placed


def top_k(scores, num: int) -> list[Edge]:
    """The `num` highest-scoring candidates of an (n, n) score matrix (docs/spec.md §4).

    Ordered by decreasing score, ties by the smallest (i, j); -inf marks a
    non-candidate.
    """
    s, mask = _check_scores(scores)
    num = _check_num(num, int(mask.sum()), "candidates (finite scores)")
    _check_informative(s, mask, num)
    flat = np.flatnonzero(mask)  # Row-major, so a stable sort breaks ties by (i, j).
    order = flat[np.argsort(-s.ravel()[flat], kind="stable")][:num]
    n = s.shape[0]
    return [(int(i), int(j)) for i, j in zip(*np.unravel_index(order, (n, n)))]


def random_edges(
    num_layers: int, num: int, seed: int, candidates: Sequence[Edge] | None = None
) -> list[Edge]:
    """`num` edges drawn uniformly without replacement (docs/spec.md §4 random baseline).

    Args:
      num_layers: number of transformer blocks L.
      num: number of edges, 1 <= num <= len(candidates).
      seed: non-negative integer seed of numpy.random.default_rng; the same
        seed gives the same edges.
      candidates: the edges to draw from; default all n^2 edges.
    """
    if candidates is None:
        pool = graph.candidates(num_layers)
    else:
        pool = graph.validate_edges(candidates, num_layers)
    num = _check_num(num, len(pool), "candidate edges")
    # An integer seed is required so a run can always be repeated; None would
    # draw fresh OS entropy.
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    return [pool[int(index)] for index in rng.choice(len(pool), size=num, replace=False)]


def all_parallel(num_layers: int) -> list[Edge]:
    """All 2L parallel edges (k, k + 1), k = 0..2L-1 (docs/spec.md §4, "PA")."""
    n = graph.num_nodes(num_layers)
    return [(k, k + 1) for k in range(n - 1)]


def first_k(num_layers: int, num: int) -> list[Edge]:
    """The first `num` parallel edges (0, 1), (1, 2), ... (docs/spec.md §4)."""
    edges = all_parallel(num_layers)
    return edges[: _check_num(num, len(edges), "parallel edges")]


def last_k(num_layers: int, num: int) -> list[Edge]:
    """The last `num` parallel edges, ending at (n - 2, n - 1), in increasing order."""
    edges = all_parallel(num_layers)
    return edges[len(edges) - _check_num(num, len(edges), "parallel edges") :]


def ffn_parallel(num_layers: int) -> list[Edge]:
    """The L parallel edges across the MLP sub-blocks, (2l + 1, 2l + 2) (docs/spec.md §4)."""
    graph.num_nodes(num_layers)  # Validates num_layers.
    return [(2 * block + 1, 2 * block + 2) for block in range(num_layers)]


def all_sequential(num_layers: int) -> list[Edge]:
    """The 2L sequential edges (k, k), k = 1..2L, one after each sub-block (docs/spec.md §4)."""
    n = graph.num_nodes(num_layers)
    return [(k, k) for k in range(1, n)]


def single(edge: Sequence[int], num_layers: int | None = None) -> list[Edge]:
    """The one-edge placement [edge] (docs/spec.md §4, for single-adapter sweeps).

    With `num_layers` the edge is fully validated against the graph; without
    it, it must at least be a pair of non-negative integers.
    """
    if num_layers is not None:
        return list(graph.validate_edges([edge], num_layers))
    is_pair = isinstance(edge, np.ndarray) and edge.shape == (2,)
    is_pair |= isinstance(edge, Sequence) and not isinstance(edge, (str, bytes)) and len(edge) == 2
    if not is_pair or not all(_is_int(node) and node >= 0 for node in edge):
        raise ValueError(f"edge must be a pair (i, j) of non-negative integers, got {edge!r}.")
    return [(int(edge[0]), int(edge[1]))]


POLICIES = {
    "gga": gga,
    "top_k": top_k,
    "random": random_edges,
    "first_k": first_k,
    "last_k": last_k,
    "all_parallel": all_parallel,
    "ffn_parallel": ffn_parallel,
    "all_sequential": all_sequential,
    "single": single,
}

# Arguments of `place` each policy cannot do without.
_REQUIRED = {
    "gga": ("scores", "num"),
    "top_k": ("scores", "num"),
    "random": ("num",),
    "first_k": ("num",),
    "last_k": ("num",),
    "single": ("edge",),
}


def _restricted_scores(scores, num_layers: int, candidates) -> np.ndarray:
    """Scores checked against the graph, with non-candidates set to -inf."""
    s, _ = _check_scores(scores)
    n = graph.num_nodes(num_layers)
    if s.shape != (n, n):
        raise ValueError(
            f"scores has shape {s.shape}, but a {num_layers}-block encoder has "
            f"{n} nodes: expected ({n}, {n})."
        )
    if candidates is not None:
        s[~graph.candidate_mask(candidates, num_layers)] = -np.inf
    return s


def place(
    policy: str,
    *,
    num_layers: int,
    num: int | None = None,
    scores=None,
    gamma: float = 0.6,
    seed: int = 0,
    edge: Sequence[int] | None = None,
    candidates: Sequence[Edge] | None = None,
) -> list[Edge]:
    """Runs the placement policy named `policy` (a key of POLICIES).

    Arguments a policy does not use are ignored, except `candidates`: only
    "gga", "top_k" and "random" choose from a candidate set, and the others
    raise rather than silently ignore a restriction.
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown placement policy {policy!r}; valid: {sorted(POLICIES)}.")
    given = {"scores": scores, "num": num, "edge": edge}
    for name in _REQUIRED.get(policy, ()):
        if given[name] is None:
            raise ValueError(f"Placement policy {policy!r} needs the argument {name!r}.")
    if candidates is not None and policy not in ("gga", "top_k", "random"):
        raise ValueError(
            f"Placement policy {policy!r} places fixed edges and takes no candidates; "
            f"only 'gga', 'top_k' and 'random' do."
        )
    if policy == "gga":
        return gga(_restricted_scores(scores, num_layers, candidates), num, gamma)
    if policy == "top_k":
        return top_k(_restricted_scores(scores, num_layers, candidates), num)
    if policy == "random":
        return random_edges(num_layers, num, seed, candidates)
    if policy in ("first_k", "last_k"):
        return POLICIES[policy](num_layers, num)
    if policy == "single":
        return single(edge, num_layers)
    return POLICIES[policy](num_layers)
