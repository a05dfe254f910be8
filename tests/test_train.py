"""Training: regex freezing, docs/spec.md §5 schedules, checkpoints and exact resumption."""

import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gga_jax import checkpoints, graph, train
from gga_jax.models import vit

EDGES = ((0, 1), (2, 4), (3, 3), (4, 0))


def tiny(edges=EDGES):
    return vit.Model(
        4, width=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4, edges=edges, adapter_rank=3
    )


def batches(start, batch=8):
    """Deterministic synthetic batches; batch s depends only on s (so resuming is exact)."""
    for s in itertools.count(start):
        rng = np.random.default_rng(s)
        yield {
            "inputs": rng.normal(size=(batch, 8, 8, 3)).astype(np.float32),
            "labels": rng.integers(0, 4, batch).astype(np.int32),
        }


def train_config(**kw):
    c = ml_collections.ConfigDict(
        dict(
            steps=4,
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            weight_decay=0.0,
            schedule="cosine",
            warmup_steps=1,
            warmup_fraction=0.06,
            grad_clip_norm=0.0,
            label_smoothing=0.0,
            log_every=1,
            checkpoint_every=2,
        )
    )
    c.update(kw)
    return c


def init(model):
    return jax.jit(model.init)(jax.random.PRNGKey(0), next(batches(0))["inputs"])["params"]


@pytest.mark.parametrize("mode", ["adapters", "linear_probe", "full_finetune"])
def test_only_the_intended_parameters_change(mode, tmp_path):
    model = tiny(EDGES if mode == "adapters" else ())
    before = train.flatten(init(model))
    after, summary = train.fit(
        model, init(model), train.TRAINABLE[mode], batches, train_config(), str(tmp_path)
    )
    after = train.flatten(after)
    assert set(after) == set(before)
    trainable = {
        k for k in before if k.startswith(("adapters/", "head/")) or mode == "full_finetune"
    }
    if mode == "linear_probe":
        trainable = {k for k in before if k.startswith("head/")}
    for name in before:
        if name in trainable:
            assert not np.array_equal(after[name], before[name]), f"{name} did not train"
        else:
            np.testing.assert_array_equal(after[name], before[name], err_msg=f"{name} changed")
    assert summary["trainable_params"] == sum(before[k].size for k in trainable)


def test_checkpoint_holds_only_the_trainable_parameters(tmp_path):
    model = tiny()
    train.fit(
        model, init(model), train.TRAINABLE["adapters"], batches, train_config(), str(tmp_path)
    )
    steps = sorted(os.listdir(tmp_path / "checkpoints"))
    assert steps == ["2", "4"]
    manager = checkpoints.Manager(str(tmp_path / "checkpoints"), 2)
    saved = manager.manager.item_metadata(4)
    names = set(getattr(saved, "tree", saved)["trainable"])
    manager.close()
    assert names and all(n.startswith(("adapters/", "head/")) for n in names)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    model = tiny()
    config = train_config(steps=6, checkpoint_every=2)
    straight, _ = train.fit(
        model, init(model), train.TRAINABLE["adapters"], batches, config, str(tmp_path / "a")
    )

    def crashing(start):
        for s, batch in zip(itertools.count(start), batches(start)):
            if s == 5:  # dies after step 5, whose checkpoint (every 2) was never written
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(KeyboardInterrupt):
        train.fit(
            model, init(model), train.TRAINABLE["adapters"], crashing, config, str(tmp_path / "b")
        )
    resumed, summary = train.fit(
        model, init(model), train.TRAINABLE["adapters"], batches, config, str(tmp_path / "b")
    )
    assert summary["resumed_from_step"] == 4
    for name, value in train.flatten(straight).items():
        np.testing.assert_array_equal(train.flatten(resumed)[name], value, err_msg=name)
    log_a = train.MetricWriter(str(tmp_path / "a")).read()
    log_b = train.MetricWriter(str(tmp_path / "b")).read()
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]


@pytest.mark.parametrize("damage", ["truncate", "delete_metadata"])
def test_a_damaged_latest_checkpoint_is_kept_aside_and_an_older_one_resumes(
    damage, tmp_path, capsys
):
    model = tiny()
    config = train_config(steps=4, checkpoint_every=2)
    fit = lambda d: train.fit(  # noqa: E731
        model, init(model), train.TRAINABLE["adapters"], batches, config, str(tmp_path / d)
    )
    straight, _ = fit("a")
    fit("b")
    step_dir = tmp_path / "b" / "checkpoints" / "4"
    files = sorted(p for p in step_dir.rglob("*") if p.is_file())
    for path in files:
        if damage == "truncate":  # a disk that filled up mid-write
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif path.name.startswith("_") or "metadata" in path.name.lower():
            path.unlink()
    resumed, summary = fit("b")
    assert summary["resumed_from_step"] == 2
    out = capsys.readouterr().out
    assert "the checkpoint of step 4" in out and "is damaged" in out
    kept = tmp_path / "b" / "checkpoints_damaged" / "4"
    assert kept.is_dir() and sum(1 for p in kept.rglob("*") if p.is_file()) >= 1
    for name, value in train.flatten(straight).items():
        np.testing.assert_array_equal(train.flatten(resumed)[name], value, err_msg=name)


def test_checkpoint_of_another_placement_is_refused_and_kept(tmp_path):
    train.fit(
        tiny(), init(tiny()), train.TRAINABLE["adapters"], batches, train_config(), str(tmp_path)
    )
    other = tiny(((0, 2),))
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(
        ValueError, match=r"missing trainable/adapters/edge_0_2/down/kernel \(16, 3\)"
    ):
        train.fit(
            other, init(other), train.TRAINABLE["adapters"], batches, train_config(), str(tmp_path)
        )
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_cosine_schedule_with_warmup():
    sched = train.schedule(train_config(steps=100, warmup_steps=10, lr=1.0), 100)
    assert float(sched(0)) == 0.0 and float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(55)) == pytest.approx(0.5, abs=1e-6)  # half-way through the cosine
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-6)


def test_polynomial_schedule_warms_up_over_six_percent():
    config = train_config(
        steps=200, warmup_steps=-1, warmup_fraction=0.06, lr=1.0, schedule="polynomial"
    )
    sched = train.schedule(config, 200)
    assert float(sched(6)) == pytest.approx(0.5)
    assert float(sched(12)) == pytest.approx(1.0)
    assert float(sched(12 + 94)) == pytest.approx(0.5)
    assert float(sched(200)) == pytest.approx(0.0, abs=1e-6)


def test_adamw_decays_weights():
    opt = train.optimizer(
        train_config(optimizer="adamw", weight_decay=0.1, schedule="constant"), 10
    )
    params = {"w": jnp.ones(3)}
    updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.1 * np.ones(3), rtol=1e-6)


def test_bad_training_settings():
    with pytest.raises(ValueError, match="Unknown optimizer 'adam'"):
        train.optimizer(train_config(optimizer="adam"), 10)
    with pytest.raises(ValueError, match="Unknown schedule"):
        train.schedule(train_config(schedule="step"), 10)
    with pytest.raises(ValueError, match="No parameter matches"):
        train.partition(init(tiny()), r"^lora/")


def test_evaluate_counts_only_real_rows():
    model = tiny(())
    params = init(model)
    batch = next(batches(0))
    eval_step = train.make_eval_step(model)
    logits = model.apply({"params": params}, batch["inputs"])
    mask = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    result = train.evaluate(eval_step, params, [{**batch, "mask": mask}])
    want = np.mean((np.argmax(logits, -1) == batch["labels"])[mask])
    assert result["examples"] == 5 and result["accuracy"] == pytest.approx(want)
    with pytest.raises(ValueError, match="empty"):
        train.evaluate(eval_step, params, [{**batch, "mask": np.zeros(8, bool)}])


def small_split(seed: int):
    """8 random images and labels, and batches(start) of 4 indexed rows cycling through them."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 8).astype(np.int32)

    def epochs(start):
        for s in itertools.count(start):
            index = np.roll(np.arange(8), s)[:4]
            yield {"inputs": inputs[index], "labels": labels[index], "index": index}

    return inputs, labels, epochs


def test_a_pass1_cache_trains_like_recomputing_pass1_at_a_fraction_of_the_flops(tmp_path):
    """Three epochs of an 8-example split: cached z_i give the same parameters."""
    model = tiny(((0, 1), (4, 0), (3, 1)))
    inputs, labels, epochs = small_split(0)

    params = init(model)
    config = train_config(steps=6, checkpoint_every=100)
    cache = train.plain_values(model, params, inputs, 3, graph.recurrent_sources(model.edges))
    plain = model.clone(edges=()).apply({"params": params}, inputs, return_nodes=True)[1]
    assert sorted(cache) == [3, 4]
    np.testing.assert_allclose(cache[4], plain["nodes"][4], atol=1e-6)
    cached, _ = train.fit(
        model,
        params,
        train.TRAINABLE["adapters"],
        epochs,
        config,
        str(tmp_path / "a"),
        cache={"pass1": cache},
    )
    recomputed, _ = train.fit(
        model, params, train.TRAINABLE["adapters"], epochs, config, str(tmp_path / "b")
    )
    for name, value in train.flatten(recomputed).items():
        np.testing.assert_allclose(train.flatten(cached)[name], value, atol=1e-6, err_msg=name)

    opt = train.optimizer(config, 6)
    trainable, frozen = train.partition(params, train.TRAINABLE["adapters"])
    batch = next(epochs(0))
    del batch["index"]
    with_cache = dict(batch, pass1={i: z[:4] for i, z in cache.items()})

    def flops(b):
        step = train.make_train_step(model, opt)
        return (
            step.lower(trainable, frozen, opt.init(trainable), b).compile().cost_analysis()["flops"]
        )

    # Pass 1 up to node 4 is the whole 2-block backbone: a third of the step's FLOPs.
    assert flops(batch) / flops(with_cache) > 1.3


@pytest.mark.parametrize("edges", [((3, 4),), ((1, 4), (3, 3)), ()])
def test_a_prefix_cache_trains_and_evaluates_like_the_full_forward(tmp_path, edges):
    """Cached nodes before the first target (a linear probe: the last node) change
    nothing but the FLOPs: same parameters after 6 steps, same evaluation."""
    model = tiny(edges)
    inputs, labels, epochs = small_split(1)

    params = init(model)
    nodes = graph.prefix_nodes(edges, 5)
    assert nodes == {(): (4,), ((3, 4),): (3,), ((1, 4), (3, 3)): (1, 2)}[edges]
    cache = {"prefix": train.plain_values(model, params, inputs, 3, nodes)}
    pattern = train.TRAINABLE["adapters" if edges else "linear_probe"]
    config = train_config(steps=6, checkpoint_every=100)
    fits = [
        train.fit(model, params, pattern, epochs, config, str(tmp_path / d), cache=c)
        for d, c in (("cached", cache), ("full", None))
    ]
    for name, value in train.flatten(fits[1][0]).items():
        np.testing.assert_allclose(train.flatten(fits[0][0])[name], value, atol=1e-6, err_msg=name)
    assert fits[0][1]["final_train_loss"] == pytest.approx(fits[1][1]["final_train_loss"], 1e-6)

    step = train.make_eval_step(model)
    batch = {"inputs": inputs, "labels": labels, "mask": np.ones(8, bool), "index": np.arange(8)}
    cached = train.evaluate(step, fits[1][0], [dict(batch)], cache=cache)
    assert cached == pytest.approx(train.evaluate(step, fits[1][0], [dict(batch)]), rel=1e-6)

    opt = train.optimizer(config, 6)
    trainable, frozen = train.partition(params, pattern)
    plain = {"inputs": inputs[:4], "labels": labels[:4]}
    given = dict(plain, prefix={k: v[:4] for k, v in cache["prefix"].items()})

    def flops(b):
        step = train.make_train_step(model, opt)
        return (
            step.lower(trainable, frozen, opt.init(trainable), b).compile().cost_analysis()["flops"]
        )

    # The first target is node 4 of 5 (or none): the cached step skips the forward
    # through node 3, its embedding included.
    assert flops(plain) / flops(given) > (2.0 if nodes[-1] >= 3 else 1.0)


def test_a_prefix_reaching_the_first_target_is_refused():
    model = tiny(((3, 4),))
    params = init(model)
    x = np.zeros((2, 8, 8, 3), np.float32)
    node = np.zeros((2, 5, 16), np.float32)
    with pytest.raises(ValueError, match=r"prefix holds nodes \[4\], at or after the first"):
        model.apply({"params": params}, x, prefix={3: node, 4: node})
