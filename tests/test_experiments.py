"""The experiment drivers: expansion, lr choice on val, statistics, resumption, bad input."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import scipy.stats

from gga_jax import data as data_lib
from gga_jax import defaults, experiments, graph, pipeline, validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """configs/experiments/<name>.py's get_config(arg), unlocked."""
    path = os.path.join(REPO, "configs", "experiments", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.unlock()
    return config


def vit_b16_sweep(experiment: str) -> ml_collections.ConfigDict:
    """A sweep on ViT-B/16 (12 blocks, 25 nodes), one seed and one lr: one run per group."""
    c = experiments.base_sweep()
    c.experiment = experiment
    c.base = defaults.base()
    c.base.model.checkpoint = "random"
    c.seeds, c.lrs = (0,), (0.01,)
    return c


# --- expansion --------------------------------------------------------------------------


def test_e2_with_stride_3_on_12_blocks_is_81_runs_on_the_sub_grid():
    c = vit_b16_sweep("e2")
    runs = experiments.expand(c)
    assert len(runs) == 81
    edges = [r.group.settings[0][1] for r in runs]
    assert edges == list(graph.candidates(12, 3))  # every edge type, nodes 0, 3, ..., 24
    # No parallel edge joins two nodes 3 apart; the three other types are all there.
    assert {graph.edge_type(e) for e in edges} == {"long_range", "sequential", "recurrent"}
    assert all(r.group.arm == "single" and r.phase == "final" for r in runs)


def test_e1_is_one_parallel_edge_per_position():
    runs = experiments.expand(vit_b16_sweep("e1"))
    assert [r.group.settings[0][1] for r in runs] == [(k, k + 1) for k in range(24)]


def test_e5_caps_n_at_what_each_policy_can_place():
    c = load("e5", "smoke")  # 2 blocks: 4 parallel edges, 25 candidates; nums (1, 3, 6)
    names = [g.name for g in experiments.groups(c)]
    assert [n for n in names if n.startswith("first_k")] == [
        "first_k_N1",
        "first_k_N3",
        "first_k_N4",
    ]
    assert [n for n in names if n.startswith("gga")] == ["gga_N1", "gga_N3", "gga_N6"]
    c.nums = (1, 12, 24)  # 12 and 24 both cap at 4 for last_k: one group, not two
    assert [g.name for g in experiments.groups(c) if g.arm == "last_k"] == [
        "last_k_N1",
        "last_k_N4",
    ]


def test_select_then_final_runs_per_group():
    c = load("e1", "smoke")  # 2 lrs x 1 select seed, then 2 seeds
    runs = [r for r in experiments.expand(c) if r.group.name == "parallel_0_1"]
    assert [(r.phase, r.lr, r.seed) for r in runs] == [
        ("select", 1e-3, 0),
        ("select", 1e-2, 0),
        ("final", None, 0),
        ("final", None, 1),
    ]
    select = experiments.run_config(c, runs[0], 1e-3)
    final = experiments.run_config(c, runs[2], 1e-2)
    assert not select.data.final and tuple(select.train.eval_splits) == ("val",)
    assert final.data.final and tuple(final.train.eval_splits) == ("test",)
    assert tuple(final.placement.edge) == (0, 1) and final.train.lr == 1e-2


def test_e3_random_sets_and_baselines_with_their_own_lr_grid():
    c = load("e3", "smoke")
    names = [g.name for g in experiments.groups(c)]
    assert names == ["random_0", "random_1", *experiments.E3_BASELINES]
    ft = next(g for g in experiments.groups(c) if g.arm == "full_finetune")
    assert experiments.lr_grid(c, ft) == (1e-5, 1e-4)
    c.unlock()
    c.random_sets, c.baselines = 0, ("linear_probe",)  # the baselines alone
    assert [g.name for g in experiments.groups(c)] == ["linear_probe"]
    experiments.check(c, None)
    c.baselines = ()
    with pytest.raises(validation.ConfigError, match="E3 would have no runs"):
        experiments.check(c, None)


@pytest.mark.parametrize("total", [1, 2, 3, 5])
def test_shards_cover_every_run_exactly_once(total):
    runs = experiments.expand(load("e5", "smoke"))
    parts = [experiments.shard(runs, f"{k}/{total}") for k in range(1, total + 1)]
    names = [r.name for part in parts for r in part]
    assert sorted(names) == sorted(r.name for r in runs) and len(set(names)) == len(runs)
    for part in parts:  # a group's select and final runs stay in one shard
        groups = {r.group.name for r in part}
        assert all(r.group.name in groups for r in runs if r.group.name in groups)


# --- statistics and the lr choice -------------------------------------------------------


def test_mean_std_and_spearman_equal_numpy_and_scipy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=7)
    mean, std = experiments.mean_std(values)
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values, ddof=1))
    assert np.isnan(experiments.mean_std([1.0])[1])
    for x, y in (
        (rng.normal(size=30), rng.normal(size=30)),
        (rng.integers(0, 4, 25), rng.integers(0, 5, 25)),  # many ties
        (np.arange(10.0), np.arange(10.0) ** 3 + rng.normal(0, 5, 10)),
    ):
        rho, p = experiments.spearman(x, y)
        ref = scipy.stats.spearmanr(x, y)
        assert rho == pytest.approx(ref.statistic, abs=1e-12)
        assert p == pytest.approx(ref.pvalue, rel=1e-6)


def test_placement_effect_is_scipys_one_way_anova():
    rng = np.random.default_rng(1)
    accs = [list(rng.normal(mu, 1.0, size)) for mu, size in ((70, 3), (72, 3), (69, 2), (75, 3))]
    rows = [{"test_accuracy": a} for a in accs] + [{"test_accuracy": [80.0]}]  # 1 seed: left out
    effect = experiments.placement_effect(rows)
    ref = scipy.stats.f_oneway(*accs)
    assert effect["groups"] == 4
    assert effect["f"] == pytest.approx(ref.statistic, rel=1e-10)
    assert effect["p"] == pytest.approx(ref.pvalue, rel=1e-8)
    means = [np.mean(a) for a in accs]
    assert effect["range"] == pytest.approx(max(means) - min(means))
    pooled = sum((len(a) - 1) * np.var(a, ddof=1) for a in accs) / (11 - 4)
    assert effect["pooled_std"] == pytest.approx(np.sqrt(pooled))
    assert np.isnan(experiments.placement_effect(rows[-1:])["p"])


def test_lr_is_chosen_by_val_accuracy_and_never_by_test():
    rows = [
        {"lr": 1e-3, "val_accuracy": 0.60, "test_accuracy": 0.90},
        {"lr": 1e-2, "val_accuracy": 0.70, "test_accuracy": 0.50},
        {"lr": 1e-3, "val_accuracy": 0.62, "test_accuracy": 0.91},
        {"lr": 1e-2, "val_accuracy": 0.64, "test_accuracy": 0.52},
    ]
    assert experiments.choose_lr(rows, (1e-3, 1e-2)) == 1e-2  # test would pick 1e-3
    tie = [{"lr": 1e-3, "val_accuracy": 0.5}, {"lr": 1e-2, "val_accuracy": 0.5}]
    assert experiments.choose_lr(tie, (1e-2, 1e-3)) == 1e-2  # ties: grid order
    no_val = [{"lr": 1e-3, "test_accuracy": 0.9}]
    with pytest.raises(KeyError):
        experiments.choose_lr(no_val, (1e-3,))


# --- sweeps end to end ---------------------------------------------------------------------


class KilledError(Exception):
    """Stands in for a kill in the middle of a run."""


def small_e1():
    c = load("e1", "smoke")
    c.base.train.steps = 4
    c.base.train.checkpoint_every = 2
    return c


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Shard 1/4 of the e1 smoke sweep (group parallel_0_1: 2 select + 2 final runs)."""
    workdir = str(tmp_path_factory.mktemp("e1_whole"))
    seen = []
    original = pipeline.evaluate_splits

    def spy(config, model, params, splits, partitioner, caches=None):
        seen.append((bool(config.data.final), tuple(config.train.eval_splits)))
        return original(config, model, params, splits, partitioner, caches)

    pipeline.evaluate_splits = spy
    try:
        summary = experiments.execute(small_e1(), workdir, "1/4")
    finally:
        pipeline.evaluate_splits = original
    return workdir, summary, seen


def test_select_runs_never_evaluate_test_and_final_runs_use_the_val_choice(uninterrupted):
    workdir, summary, seen = uninterrupted
    assert seen == [(False, ("val",))] * 2 + [(True, ("test",))] * 2
    row = summary["groups"][0]
    assert row["group"] == "parallel_0_1" and row["seeds_done"] == 2
    assert [s["lr"] for s in row["select"]] == [1e-3, 1e-2]
    best = max(row["select"], key=lambda s: (s["val_accuracy"], -row["select"].index(s)))
    assert row["lr"] == best["lr"]
    for run in ("select_lr0.001_s0", "select_lr0.01_s0"):
        arm = json.load(open(os.path.join(workdir, "runs", "parallel_0_1", run, "results.json")))
        assert "test_accuracy" not in arm["arms"][0] and "val_accuracy" in arm["arms"][0]
    assert os.path.exists(os.path.join(workdir, "e1.png"))
    assert "parallel_0_1" in open(os.path.join(workdir, "table.csv")).read()


def test_a_sweep_killed_midway_finishes_with_the_same_table(uninterrupted, tmp_path, monkeypatch):
    workdir = str(tmp_path / "e1_killed")
    calls = {"n": 0}
    original = data_lib.train_batches

    def dying(split, batch_size, seed, start=0, rows=None):
        for batch in original(split, batch_size, seed, start, rows=rows):
            calls["n"] += 1
            # Heads of 2 steps (select data, then final data) and runs of 4: batch 15 is
            # step 3 of the first final run, after its step-2 checkpoint.
            if calls["n"] == 15:
                raise KilledError
            yield batch

    monkeypatch.setattr(data_lib, "train_batches", dying)
    killed = small_e1()
    killed.base.data.prefetch = 0  # no reading ahead: the kill lands at the same step each time
    with pytest.raises(KilledError):
        experiments.execute(killed, workdir, "1/4")
    monkeypatch.setattr(data_lib, "train_batches", original)
    assert os.path.exists(os.path.join(workdir, "runs", "parallel_0_1", "select_lr0.01_s0"))
    summary = experiments.execute(small_e1(), workdir, "1/4")
    whole = uninterrupted[1]["groups"][0]
    again = summary["groups"][0]
    for key in ("lr", "edges", "test_accuracy", "train_loss", "select"):
        assert again[key] == whole[key], key
    table = open(os.path.join(workdir, "table.csv")).read()
    assert table == open(os.path.join(uninterrupted[0], "table.csv")).read()


# --- bad input -------------------------------------------------------------------------------


def one_line_error(config, workdir=None, match=""):
    with pytest.raises(validation.ConfigError, match=match) as info:
        experiments.check(config, workdir)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_n_above_the_candidates_is_one_line():
    c = load("e5", "smoke")
    c.nums = (1, 40)
    one_line_error(c, match=r"nums has N = 40: above the 25 candidate edges of the 2-block model")


def test_empty_lr_grid_is_one_line():
    c = load("e1", "smoke")
    c.lrs = ()
    one_line_error(c, match=r"lrs = \(\): must be a non-empty tuple of positive learning rates")


def test_bad_shard_spec_is_one_line():
    for spec in ("3/2", "0/2", "a/b", "2"):
        with pytest.raises(validation.ConfigError, match=f"--shard = {spec!r}: must be k/K"):
            experiments.parse_shard(spec)


def test_lr_choice_without_a_val_split_is_refused():
    c = load("e1", "smoke")
    c.base.data.val_size = 0
    one_line_error(c, match="base.data.val_size = 0 holds out no val split")


def test_a_bad_base_key_names_the_group():
    c = load("e1", "smoke")
    c.base.train.steps = 0
    one_line_error(c, match=r"group parallel_0_1: .*train.steps = 0")


def test_a_workdir_holding_another_experiment_is_refused(uninterrupted):
    c = small_e1()
    c.base.train.steps = 5
    message = one_line_error(c, uninterrupted[0], match="holds another experiment")
    assert "base.train.steps: 4 there, 5 now" in message


def copy_without(workdir, tmp_path, key):
    """A copy of workdir whose experiment.json lacks `key`, as one an older library wrote."""
    copy = tmp_path / "older"
    shutil.copytree(workdir, copy)
    record = json.loads((copy / "experiment.json").read_text())
    del record[key]
    (copy / "experiment.json").write_text(json.dumps(record))
    return str(copy)


def test_a_key_added_since_at_its_default_still_resumes(uninterrupted, tmp_path):
    older = copy_without(uninterrupted[0], tmp_path, "base.model.remat")
    experiments.check(small_e1(), older)  # remat is "none", the default: no difference


def test_a_key_added_since_off_its_default_is_refused(uninterrupted, tmp_path):
    older = copy_without(uninterrupted[0], tmp_path, "base.model.remat")
    c = small_e1()
    c.base.model.remat = "block"
    message = one_line_error(c, older, match="holds another experiment")
    assert "base.model.remat: '<absent>' there, 'block' now" in message


def test_cli_unknown_experiment_argument_is_one_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "gga_jax.experiments",
        "--config=configs/experiments/e5.py:backbone=text,speed=2",
        f"--workdir={tmp_path}",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error: ") and "'speed'" in first, result.stderr
    assert not os.listdir(tmp_path)


def test_e6_dry_run_plans_every_arm_and_rank():
    c = load("e6")
    c.base.model.overrides = {"width": 64, "depth": 2, "num_heads": 2, "mlp_dim": 128}
    c.base.data.image_size = 28
    c.base.model.overrides["patch_size"] = 14
    c.base.placement.num = 4
    text = experiments.dry_run(c)
    assert text.startswith("e6: 24 runs in 8 groups")
    assert text.count("Memory plan per device") == 8


def test_adapters_are_initialised_without_the_backbone_with_model_init_shapes():
    import jax

    from gga_jax import adapters
    from gga_jax.models import vit

    edges = ((0, 1), (1, 3), (2, 2), (4, 1))  # parallel, long-range, sequential, recurrent
    model = vit.Model(
        10,
        width=16,
        depth=2,
        num_heads=2,
        mlp_dim=32,
        patch_size=(4, 4),
        edges=edges,
        adapter_rank={(0, 1): 2, (1, 3): 3, (2, 2): 4, (4, 1): 5},
        linear_edges=((1, 3),),
    )
    images = np.zeros((1, 8, 8, 3), np.float32)
    reference = model.init(jax.random.PRNGKey(0), images)["params"]["adapters"]
    fresh = adapters.init_adapters(model, jax.random.PRNGKey(1), 16)
    shapes = lambda t: jax.tree_util.tree_map(np.shape, t)  # noqa: E731
    assert shapes(fresh) == shapes(reference)
    again = adapters.init_adapters(model, jax.random.PRNGKey(1), 16)
    jax.tree_util.tree_map(np.testing.assert_array_equal, fresh, again)
    assert not np.any(fresh["edge_0_1"]["up"]["kernel"])  # A(x) = 0 at initialisation
    assert np.any(fresh["edge_0_1"]["down"]["kernel"])


# --- iterative GGA in the pipeline -----------------------------------------------------------


def smoke_run_config(**placement):
    c = load("e5", "smoke").base
    c.arms = ("gga", "iterative_gga")
    c.placement.num = 4
    c.placement.iterative_rounds = 2
    for key, value in placement.items():
        c.placement[key] = value
    c.train.steps = 2
    c.lock()
    return c


def test_iterative_gga_without_rescoring_places_what_gga_places(tmp_path):
    results = pipeline.run(smoke_run_config(rescore=False), str(tmp_path))
    gga, iterative = results["arms"]
    assert iterative["edges"] == gga["edges"] and len(gga["edges"]) == 4
    assert not any(p.name.startswith("round_") for p in (tmp_path / "iterative_gga").iterdir())


def test_iterative_gga_trains_between_rounds_and_rescores_the_rest(tmp_path):
    results = pipeline.run(smoke_run_config(iterative_steps=2), str(tmp_path))
    edges = [tuple(e) for e in results["arms"][1]["edges"]]
    assert len(set(edges)) == 4 and all(e in graph.candidates(2) for e in edges)
    assert (tmp_path / "iterative_gga" / "round_2" / "checkpoints").is_dir()
    assert json.loads((tmp_path / "iterative_gga" / "placement.json").read_text())["edges"]


# --- summaries of every experiment (synthetic finished runs: no training) ------------------------


def fake_finished(config, workdir, rng):
    """Writes a results.json for every run, as pipeline.run would, with random accuracies."""
    for run in experiments.expand(config):
        folder = os.path.join(workdir, "runs", run.name)
        os.makedirs(folder)
        settings = dict(run.group.settings)
        edges = [list(settings.get("placement.edge", (0, 1)))]
        edges = [] if run.group.arm == "linear_probe" else edges
        row = {
            "arm": run.group.arm,
            "edges": edges,
            "trainable_params": 100,
            "final_train_loss": float(rng.uniform(0.5, 1)),
            "wall_time_s": 1.0,
        }
        split = "val" if run.phase == "select" else "test"
        row[f"{split}_accuracy"] = float(rng.uniform(0.3, 0.9))
        lr = run.lr if run.lr is not None else experiments.lr_grid(config, run.group)[-1]
        results = {"config": {"train": {"lr": lr}}, "arms": [row]}
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump(results, f)


@pytest.mark.parametrize("name", ["e1", "e2", "e3", "e4", "e5"])
def test_summary_tables_and_figures_of_each_experiment(name, tmp_path):
    c = load(name, "smoke")
    rng = np.random.default_rng(0)
    fake_finished(c, str(tmp_path), rng)
    if name == "e4":
        for steps in c.head_steps:
            for seed in c.seeds:
                folder = tmp_path / "scores" / f"head{steps}_s{seed}"
                folder.mkdir(parents=True)
                for aggregation in c.aggregations:
                    np.save(folder / f"{aggregation}.npy", rng.normal(size=(5, 5)))
    summary = experiments.summarize(c, str(tmp_path))
    rows = summary["groups"]
    assert len(rows) == len(experiments.groups(c)) and all(r["seeds_done"] == 2 for r in rows)
    for r in rows:
        assert r["test_mean"] == pytest.approx(np.mean(r["test_accuracy"]))
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    csv_rows = (tmp_path / "table.csv").read_text().strip().splitlines()
    assert len(csv_rows) == len(rows) + 1
    if name == "e4":
        correlations = summary["correlations"]
        assert len(correlations) == 2 * len(c.head_steps) * len(c.aggregations)
        assert (tmp_path / "e4_scatter.png").exists()
        assert "Spearman rho" in (tmp_path / "table.md").read_text()


def test_runs_sharing_node_caches_give_the_results_of_full_forwards(tmp_path):
    """A single adapter and a linear probe on cached frozen nodes (an experiment's
    shared cache) train and evaluate as with every node computed."""

    def results(prefix_cache, cache, name):
        c = load("e1", "smoke").base
        c.arms = ("single", "linear_probe")
        c.placement.edge = (2, 3)
        c.train.steps, c.train.prefix_cache = 4, prefix_cache
        c.lock()
        return pipeline.run(c, str(tmp_path / name), cache)["arms"]

    shared = {}
    cached = results(True, shared, "cached")
    assert sorted(len(json.loads(k[1])["nodes"]) for k in shared if k[0] == "nodes") == [1] * 4
    for got, want in zip(cached, results(False, None, "full")):
        for key in ("val_accuracy", "test_accuracy", "val_loss", "test_loss", "final_train_loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (got["arm"], key)
