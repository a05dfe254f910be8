"""Streamed TFDS splits (data.StreamedSplit) against the in-memory path, on real TFDS files."""

import json
import os
import threading

import jax
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import tfds_mock  # noqa: E402  (tests/, on the path under pytest)

from gga_jax import data, defaults  # noqa: E402
from gga_jax.models import vit  # noqa: E402

NUM = 60
SIZE = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """{"tfrecord": dir, "array_record": dir}: the same n60 dataset in each format."""
    out = {}
    for fmt in ("tfrecord", "array_record"):
        out[fmt] = str(tmp_path_factory.mktemp(fmt))
        tfds_mock.prepare(out[fmt], NUM, fmt)
    return out


@pytest.fixture
def task(monkeypatch):
    monkeypatch.setitem(data.TFDS_TASKS, tfds_mock.NAME, tfds_mock.task(NUM))


def load(data_dir, stream, **fields):
    config = dict(source="tfds", name=tfds_mock.NAME, data_dir=data_dir, image_size=SIZE)
    return data.load({**config, "stream": stream, **fields})


def as_float(batch):
    """A streamed batch's uint8 images as the model sees them (vit.UINT8_VALUES)."""
    return {**batch, "inputs": vit.UINT8_VALUES[batch["inputs"]]}


def assert_same(streamed, held):
    assert streamed["inputs"].dtype == np.uint8
    got = as_float(streamed)
    assert sorted(got) == sorted(held)
    for key, value in held.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_streamed_splits_give_the_in_memory_batches(dirs, task):
    held = load(dirs["tfrecord"], "never")  # tf.data's as_dataset, float32 in memory
    streamed = load(dirs["array_record"], "always")
    for role in ("train", "val", "test"):
        assert isinstance(held[role], data.Split)
        assert isinstance(streamed[role], data.StreamedSplit)
        assert streamed[role].num_examples == held[role].num_examples
    assert held["train"].num_examples == NUM * 4 // 5
    # 7 steps of 16 run over two epochs of 48 examples (3 steps each) and into a third.
    pairs = zip(
        data.train_batches(streamed["train"], 16, seed=3),
        data.train_batches(held["train"], 16, seed=3),
    )
    for _, (s, h) in zip(range(7), pairs):
        assert_same(s, h)
    for s, h in zip(data.eval_batches(streamed["test"], 8), data.eval_batches(held["test"], 8)):
        assert_same(s, h)


def test_array_record_reads_into_memory_like_tfrecord(dirs, task):
    """stream="never" on array_record files (tfds's as_dataset cannot read them) still works."""
    held = load(dirs["tfrecord"], "never", final=True)
    records = load(dirs["array_record"], "never", final=True)
    assert records["val"] is None and isinstance(records["train"], data.Split)
    for role in ("train", "test"):
        np.testing.assert_array_equal(records[role].inputs, held[role].inputs)
        np.testing.assert_array_equal(records[role].labels, held[role].labels)


def test_resuming_mid_epoch_with_prefetch_is_exact(dirs, task):
    split = load(dirs["array_record"], "always")["train"]
    whole = data.prefetch(data.train_batches(split, 16, seed=1), depth=2)
    uninterrupted = [next(whole) for _ in range(5)]
    whole.close()
    resumed = data.prefetch(data.train_batches(split, 16, seed=1, start_step=2), depth=2)
    for expected in uninterrupted[2:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


class Counting:
    """A record source that remembers which indices were read."""

    def __init__(self, records):
        self.records, self.read = records, []

    def __len__(self):
        return len(self.records)

    def __getitems__(self, keys):
        self.read.extend(keys)
        return self.records.__getitems__(keys)


def test_rows_read_only_those_rows(dirs, task):
    split = load(dirs["array_record"], "always")["train"]
    counting = Counting(split.records)
    split.records = counting
    full = next(data.train_batches(load(dirs["tfrecord"], "never")["train"], 16, seed=4))
    part = next(data.train_batches(split, 16, seed=4, rows=slice(8, 16)))
    assert sorted(counting.read) == sorted(full["index"][8:].tolist())
    np.testing.assert_array_equal(vit.UINT8_VALUES[part["inputs"]], full["inputs"][8:])


def test_auto_streams_above_the_size_and_not_below(dirs, task):
    gib = (NUM * 4 // 5) * SIZE * SIZE * 3 * 4 / 2**30  # train's float32 bytes
    above = load(dirs["array_record"], "auto", stream_above_gib=gib * 0.99)
    below = load(dirs["array_record"], "auto", stream_above_gib=gib * 1.01)
    assert isinstance(above["train"], data.StreamedSplit)
    assert isinstance(below["train"], data.Split)
    assert isinstance(above["test"], data.Split)  # test is smaller: a quarter of NUM


def test_streaming_tfrecord_files_is_refused_before_reading(dirs, task):
    with pytest.raises(ValueError, match="needs random access.*--file_format=array_record") as e:
        load(dirs["tfrecord"], "always")
    assert "\n" not in str(e.value) and "stream = 'never'" in str(e.value)
    with pytest.raises(ValueError, match=r"float32 copy would take .* GiB > stream_above_gib"):
        load(dirs["tfrecord"], "auto", stream_above_gib=1e-9)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(stream="sometimes"), r"stream must be one of \('auto', 'always', 'never'\)"),
        (dict(stream_above_gib=0), "stream_above_gib must be a number of GiB above 0"),
        (dict(prefetch=-1), "prefetch must be an integer >= 0"),
    ],
)
def test_bad_stream_fields_are_refused_before_reading(fields, message, task):
    config = dict(source="tfds", name=tfds_mock.NAME, data_dir="/nonexistent", **fields)
    with pytest.raises(ValueError, match=message):
        data.load(config)


def test_stream_fields_apply_to_the_paper_tasks_only():
    config = dict(source="offline", name="digits", stream="always")
    with pytest.raises(ValueError, match=r"\['stream'\] apply to 'tfds' only"):
        data.load(config)


def test_streaming_a_text_task_is_refused(tmp_path):
    config = dict(source="tfds", name="glue/sst2", data_dir=str(tmp_path), stream="always")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="is text, which is tokenized into memory"):
            data.load(config, tokenizer=lambda *a: None)


def test_prefetch_raises_the_readers_error_and_stops():
    def failing():
        yield 1
        raise OSError("disk gone")

    got = data.prefetch(failing(), depth=2)
    assert next(got) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(got)


def test_closing_a_prefetch_stops_its_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    got = data.prefetch(endless(), depth=3)
    assert [next(got) for _ in range(4)] == [0, 1, 2, 3]
    got.close()
    for t in threading.enumerate():
        if t.name == "gga_jax-prefetch":
            t.join(timeout=5)
    assert threading.active_count() == before


def test_the_vit_takes_uint8_images_as_their_float_values():
    model = vit.Model(5, width=16, depth=1, num_heads=2, mlp_dim=32, patch_size=4)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    floats = pixels / np.float32(127.5) - np.float32(1)
    params = model.init(jax.random.PRNGKey(0), floats)
    np.testing.assert_array_equal(model.apply(params, pixels), model.apply(params, floats))
    np.testing.assert_array_equal(vit.UINT8_VALUES[pixels], floats)


TWO_PROCESS_SCRIPT = """
import json, sys
from gga_jax import sharding
assert sharding.initialize_distributed()
import jax, ml_collections, numpy as np
from jax.experimental import multihost_utils
sys.path.insert(0, "tests")
import tfds_mock
from gga_jax import data, defaults, pipeline
data.TFDS_TASKS[tfds_mock.NAME] = tfds_mock.task(int(sys.argv[2]))
splits = {"train": data.load(dict(source="tfds", name=tfds_mock.NAME, data_dir=sys.argv[1],
                                  image_size=16, stream="always"))["train"]}
config = defaults.base()
config.train.batch_size = 16
p = sharding.Partitioner(sharding.make_mesh([("data", 2), ("fsdp", 1)]))
read = []
for step, batch in zip(range(4), pipeline.train_batches(config, splits)(2)):
    read.append(batch["index"].tolist())
    images = p.to_global({"inputs": batch["inputs"]}, 16)["inputs"]
    whole = np.asarray(multihost_utils.process_allgather(images, tiled=True))
    np.save(f"{sys.argv[1]}/global_{jax.process_index()}_{step}.npy", whole)
print(json.dumps({"process": jax.process_index(), "read": read}))
"""


def test_two_processes_each_read_only_their_rows(dirs, task):
    """jax.distributed over 2 CPU processes: each reads its half of each batch, once."""
    from test_sharding import two_processes

    args = [dirs["array_record"], str(NUM)]
    outputs = two_processes(TWO_PROCESS_SCRIPT, args, local_devices=1)
    read = [json.loads(out.strip().splitlines()[-1])["read"] for out in outputs]
    held = load(dirs["tfrecord"], "never")["train"]
    expected = data.train_batches(held, 16, seed=defaults.base().seed, start_step=2)
    for step, batch in zip(range(4), expected):
        assert read[0][step] == batch["index"][:8].tolist()
        assert read[1][step] == batch["index"][8:].tolist()
        for pid in range(2):
            whole = np.load(os.path.join(dirs["array_record"], f"global_{pid}_{step}.npy"))
            np.testing.assert_array_equal(vit.UINT8_VALUES[whole], batch["inputs"])
