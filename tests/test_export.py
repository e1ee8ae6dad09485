"""SavedModel export: signatures equal the Keras model, versions, atomicity, loading without
fcn_tf, the loader and the CLI."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_VGG
from helpers import (
    REPO_ROOT,
    keras_class_ids,
    pixel_classifier,
    random_thin_fcn,
    randomize,
    run_python_json,
)

from fcn_tf.export import (
    constants,
    export_checkpoint,
    export_saved_model,
    load_model_for_export,
    next_version,
    publish_version,
    read_metadata,
    run_class_names,
)
from fcn_tf.palette import palette_for
from fcn_tf.training import runs
from fcn_tf.training.config import from_dict, to_dict
from fcn_tf.training.loop import build_model

SIZES = [(37, 53), (128, 96), (500, 375)]
NUM_CLASSES = 5


def rgb(rng, height, width, batch=None):
    shape = (height, width, 3) if batch is None else (batch, height, width, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def fcn():
    keras.utils.set_random_seed(0)
    return random_thin_fcn(NUM_CLASSES)


@pytest.fixture(scope="module")
def exported(fcn, tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    folder = export_saved_model(
        fcn, str(base), probabilities=True, class_names=[f"c{i}" for i in range(NUM_CLASSES)]
    )
    return folder, tf.saved_model.load(folder)


# -- signatures equal the Keras model -------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tensor_signatures_equal_the_keras_model(fcn, exported, rng, size):
    images = rgb(rng, *size, batch=2)
    logits = fcn(images.astype(np.float32))
    signatures = exported[1].signatures

    class_ids = signatures[constants.SERVING_DEFAULT](**{constants.INPUT_IMAGES: images})
    class_ids = class_ids[constants.OUTPUT_CLASS_IDS]
    assert class_ids.dtype == tf.uint8
    np.testing.assert_array_equal(class_ids.numpy(), np.argmax(np.asarray(logits), -1))

    probabilities = signatures[constants.PROBABILITIES](**{constants.INPUT_IMAGES: images})
    probabilities = probabilities[constants.OUTPUT_PROBABILITIES]
    assert probabilities.dtype == tf.float32
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    np.testing.assert_allclose(probabilities.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_png_bytes_equal_the_keras_model(fcn, exported, rng, size):
    image = rgb(rng, *size)
    out = exported[1].signatures[constants.PREDICT_IMAGE_BYTES](
        **{constants.INPUT_IMAGE_BYTES: tf.stack([tf.io.encode_png(image)])}
    )
    assert out[constants.OUTPUT_CLASS_IDS].dtype == tf.uint8
    np.testing.assert_array_equal(
        out[constants.OUTPUT_CLASS_IDS][0], keras_class_ids(fcn, image[None])[0]
    )
    np.testing.assert_array_equal(out[constants.OUTPUT_IMAGE_SIZE], [size])


def test_jpeg_bytes_equal_the_model_on_the_decoded_jpeg(fcn, exported, rng):
    encoded = [tf.io.encode_jpeg(rgb(rng, h, w), quality=90) for h, w in SIZES]
    out = exported[1].signatures[constants.PREDICT_IMAGE_BYTES](
        **{constants.INPUT_IMAGE_BYTES: tf.stack(encoded)}
    )
    for index, (data, (h, w)) in enumerate(zip(encoded, SIZES, strict=True)):
        decoded = tf.io.decode_jpeg(data, channels=3).numpy()
        labels = out[constants.OUTPUT_CLASS_IDS][index, :h, :w]
        np.testing.assert_array_equal(labels, keras_class_ids(fcn, decoded[None])[0])


def test_mixed_sizes_are_padded_and_each_image_is_run_alone(fcn, exported, rng):
    pictures = [rgb(rng, h, w) for h, w in [(37, 53), (61, 20), (12, 70)]]
    out = exported[1].signatures[constants.PREDICT_IMAGE_BYTES](
        **{constants.INPUT_IMAGE_BYTES: tf.stack([tf.io.encode_png(p) for p in pictures])}
    )
    class_ids = out[constants.OUTPUT_CLASS_IDS].numpy()
    assert class_ids.shape == (3, 61, 70)
    np.testing.assert_array_equal(out[constants.OUTPUT_IMAGE_SIZE], [[37, 53], [61, 20], [12, 70]])
    for index, picture in enumerate(pictures):
        h, w = picture.shape[:2]
        np.testing.assert_array_equal(
            class_ids[index, :h, :w], keras_class_ids(fcn, picture[None])[0]
        )
        padding = np.ones(class_ids.shape[1:], bool)
        padding[:h, :w] = False
        assert (class_ids[index][padding] == constants.PAD_CLASS_ID).all()
    assert NUM_CLASSES <= constants.PAD_CLASS_ID  # so padding is no class


def test_an_empty_request_gives_empty_outputs(exported):
    out = exported[1].signatures[constants.PREDICT_IMAGE_BYTES](
        **{constants.INPUT_IMAGE_BYTES: tf.zeros([0], tf.string)}
    )
    assert out[constants.OUTPUT_CLASS_IDS].shape == (0, 0, 0)
    assert out[constants.OUTPUT_IMAGE_SIZE].shape == (0, 2)


def test_an_empty_batch_of_pixels_gives_empty_outputs(exported):
    signatures = exported[1].signatures
    empty = {constants.INPUT_IMAGES: tf.zeros([0, 7, 9, 3], tf.uint8)}
    assert signatures[constants.SERVING_DEFAULT](**empty)[constants.OUTPUT_CLASS_IDS].shape == (
        0, 7, 9,
    )  # fmt: skip
    probabilities = signatures[constants.PROBABILITIES](**empty)[constants.OUTPUT_PROBABILITIES]
    assert probabilities.shape == (0, 7, 9, NUM_CLASSES) and probabilities.dtype == tf.float32


def test_signatures_have_dynamic_batch_height_and_width(exported):
    signatures = exported[1].signatures
    assert set(signatures) == {
        constants.SERVING_DEFAULT,
        constants.PREDICT_IMAGE_BYTES,
        constants.PROBABILITIES,
    }
    images = {constants.INPUT_IMAGES: ([None, None, None, 3], tf.uint8)}
    expected_inputs = {
        constants.SERVING_DEFAULT: images,
        constants.PROBABILITIES: images,
        constants.PREDICT_IMAGE_BYTES: {constants.INPUT_IMAGE_BYTES: ([None], tf.string)},
    }
    for name, inputs in expected_inputs.items():
        specs = signatures[name].structured_input_signature[1]
        found = {key: (spec.shape.as_list(), spec.dtype) for key, spec in specs.items()}
        assert found == inputs, name
    outputs = signatures[constants.PREDICT_IMAGE_BYTES].structured_outputs
    assert outputs[constants.OUTPUT_CLASS_IDS].shape.as_list() == [None, None, None]
    assert outputs[constants.OUTPUT_IMAGE_SIZE].shape.as_list() == [None, 2]
    outputs = signatures[constants.PROBABILITIES].structured_outputs
    assert outputs[constants.OUTPUT_PROBABILITIES].shape.as_list() == [None] * 3 + [NUM_CLASSES]


def test_metadata_describes_the_export(exported):
    metadata = read_metadata(exported[0])
    assert metadata["num_classes"] == NUM_CLASSES
    assert metadata["class_names"] == [f"c{i}" for i in range(NUM_CLASSES)]
    assert metadata["class_ids_dtype"] == "uint8"
    assert metadata["palette"] == palette_for(metadata["class_names"])[:NUM_CLASSES].tolist()
    assert metadata["pad_class_id"] == constants.PAD_CLASS_ID
    assert metadata["max_pixels"] == constants.DEFAULT_MAX_PIXELS
    assert sorted(metadata["signatures"]) == sorted(exported[1].signatures)
    bytes_outputs = metadata["signatures"][constants.PREDICT_IMAGE_BYTES]["outputs"]
    assert bytes_outputs[constants.OUTPUT_IMAGE_SIZE] == {"dtype": "int32", "shape": [None, 2]}
    # Inputs as the loaded SavedModel's signatures take them, by name.
    for name, signature in exported[1].signatures.items():
        specs = signature.structured_input_signature[1]
        expected = {
            k: {"dtype": v.dtype.name, "shape": v.shape.as_list()} for k, v in specs.items()
        }
        assert metadata["signatures"][name]["inputs"] == expected != {}, name


def test_each_weight_is_stored_once(fcn, exported):
    reader = tf.train.load_checkpoint(os.path.join(exported[0], "variables", "variables"))
    shapes = reader.get_variable_to_shape_map()
    stored = sum(int(np.prod(shape)) for key, shape in shapes.items() if key.endswith("VALUE"))
    assert stored == sum(int(np.prod(variable.shape)) for variable in fcn.variables)


def test_probabilities_are_opt_in_and_many_classes_give_int32(tmp_path, rng):
    model = pixel_classifier(300)
    folder = export_saved_model(model, str(tmp_path))
    loaded = tf.saved_model.load(folder)
    assert set(loaded.signatures) == {constants.SERVING_DEFAULT, constants.PREDICT_IMAGE_BYTES}
    images = rgb(rng, 9, 11, batch=2)
    out = loaded.signatures[constants.SERVING_DEFAULT](**{constants.INPUT_IMAGES: images})
    assert out[constants.OUTPUT_CLASS_IDS].dtype == tf.int32
    expected = keras_class_ids(model, images)
    assert expected.max() > 255  # the ids need more than 8 bits
    np.testing.assert_array_equal(out[constants.OUTPUT_CLASS_IDS], expected)
    out = loaded.signatures[constants.PREDICT_IMAGE_BYTES](
        **{constants.INPUT_IMAGE_BYTES: tf.stack([tf.io.encode_png(images[0])])}
    )
    assert out[constants.OUTPUT_CLASS_IDS].dtype == tf.int32
    np.testing.assert_array_equal(out[constants.OUTPUT_CLASS_IDS][0], expected[0])
    assert read_metadata(folder)["class_names"] == [f"class_{i}" for i in range(300)]


def test_a_model_that_does_not_keep_the_input_size_is_refused(tmp_path):
    inputs = keras.Input((None, None, 3))
    coarse = keras.layers.Conv2D(3, 3, strides=2, padding="same")(inputs)
    with pytest.raises(ValueError, match="a 33x35 input gives 17x18 scores"):
        export_saved_model(keras.Model(inputs, coarse), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_wrong_class_name_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="2 class names for a model of 4 classes"):
        export_saved_model(pixel_classifier(4), str(tmp_path), class_names=["a", "b"])
    assert os.listdir(tmp_path) == []


def test_loads_and_predicts_with_tensorflow_alone(fcn, exported, rng, tmp_path):
    images = rgb(rng, 37, 53, batch=1)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["fcn_tf"] = None  # TF Serving has neither: importing them must fail
        sys.modules["keras"] = None
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({exported[0]!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        ids = loaded.signatures["serving_default"](images=tf.constant(images))["class_ids"]
        png = tf.stack([tf.io.encode_png(images[0])])
        from_bytes = loaded.signatures["predict_image_bytes"](image_bytes=png)["class_ids"]
        print("RESULT" + json.dumps({{"ids": ids.numpy().tolist(),
                                     "bytes": from_bytes.numpy().tolist()}}))
    """)
    result = run_python_json(script)
    expected = keras_class_ids(fcn, images)
    np.testing.assert_array_equal(result["ids"], expected)
    np.testing.assert_array_equal(result["bytes"], expected)


def test_signature_defs_run_in_a_session_as_tf_serving_runs_them(fcn, exported, rng):
    # TF Serving (C++) loads the MetaGraph and runs a Session on the SignatureDef's tensor
    # names, not the Python functions that tf.saved_model.load revives.
    images = rgb(rng, 37, 53, batch=2)
    png = [tf.io.encode_png(image).numpy() for image in images]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], exported[0])
        results = {}
        for name, value in [
            (constants.SERVING_DEFAULT, images),
            (constants.PREDICT_IMAGE_BYTES, png),
        ]:
            signature = meta_graph.signature_def[name]
            (feed,) = signature.inputs.values()
            fetch = signature.outputs[constants.OUTPUT_CLASS_IDS].name
            results[name] = session.run(fetch, {feed.name: value})
    expected = keras_class_ids(fcn, images)
    for name, class_ids in results.items():
        np.testing.assert_array_equal(class_ids, expected, err_msg=name)


# -- versions and atomicity -----------------------------------------------------------------


def test_next_version_counts_only_numeric_folders(tmp_path):
    assert next_version(str(tmp_path / "missing")) == 1
    assert next_version(str(tmp_path)) == 1
    for name in ("3", "10", "backup", "-20", "+30", "4a", ".tmp-99-1", "٣"):
        (tmp_path / name).mkdir()
    (tmp_path / "50").write_text("a file, not a version")
    assert next_version(str(tmp_path)) == 11


def test_versions_are_numbered_explicit_and_never_overwritten(tmp_path):
    model = pixel_classifier(3)
    base = str(tmp_path)
    assert export_saved_model(model, base) == os.path.join(base, "1")
    assert export_saved_model(model, base) == os.path.join(base, "2")
    assert export_saved_model(model, base, 7) == os.path.join(base, "7")
    assert export_saved_model(model, base) == os.path.join(base, "8")
    before = os.path.getmtime(os.path.join(base, "7", "saved_model.pb"))
    with pytest.raises(FileExistsError, match=r"7 exists: versions are never overwritten"):
        export_saved_model(model, base, 7)
    assert sorted(os.listdir(base)) == ["1", "2", "7", "8"]
    assert os.path.getmtime(os.path.join(base, "7", "saved_model.pb")) == before
    with pytest.raises(ValueError, match="non-negative integer"):
        export_saved_model(model, base, -1)


def test_a_failed_save_leaves_nothing(tmp_path, monkeypatch):
    base = tmp_path / "models"
    seen = []
    real_save = tf.saved_model.save

    def failing_save(obj, export_dir, *args, **kwargs):
        real_save(obj, export_dir, *args, **kwargs)  # a complete graph, then the failure
        seen.extend(os.listdir(base))
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(pixel_classifier(3), str(base))
    assert len(seen) == 1 and seen[0].startswith(".tmp-1-")  # hidden while written
    assert os.listdir(base) == []


def _racing_write(base, version):
    """A write during which another exporter publishes ``version``."""

    def write(folder):
        (base / folder / "saved_model.pb").write_bytes(b"mine")
        (base / str(version)).mkdir()
        (base / str(version) / "saved_model.pb").write_bytes(b"theirs")

    return write


def test_a_version_taken_by_a_concurrent_exporter(tmp_path):
    base = tmp_path
    # Numbered automatically: take the next number.
    final = publish_version(str(base), _racing_write(base, 1))
    assert final == str(base / "2")
    assert (base / "2" / "saved_model.pb").read_bytes() == b"mine"
    assert (base / "1" / "saved_model.pb").read_bytes() == b"theirs"
    # Numbered explicitly: an error, and the other exporter's version kept.
    with pytest.raises(FileExistsError, match="published by another exporter"):
        publish_version(str(base), _racing_write(base, 5), version=5)
    assert sorted(os.listdir(base)) == ["1", "2", "5"]
    assert (base / "5" / "saved_model.pb").read_bytes() == b"theirs"


# -- from a run folder, checkpoint or .keras file; the CLI ----------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as the trainer leaves it, without training: config, checkpoints, best,
    metrics.jsonl and model.keras (the best weights)."""
    folder = tmp_path_factory.mktemp("run")
    config = from_dict(
        {
            "model": {"geometry": "same", "backbone_options": dict(TINY_VGG)},
            "data": {"num_classes": 3},
        }
    )
    runs.write_config(str(folder), to_dict(config), {"command": ["test"]})
    model = build_model(config, 3)
    randomize(model, np.random.default_rng(2))
    best = [np.array(w) for w in model.weights]
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(folder / runs.BEST), 1).save()
    model.save(str(folder / runs.MODEL))
    randomize(model, np.random.default_rng(3))  # later, worse weights
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    tf.train.CheckpointManager(checkpoint, str(folder / runs.CHECKPOINTS), 1).save(40)
    latest = [np.array(w) for w in model.weights]
    names = ["background", "disc", "ring"]
    record = {"epoch": 1, "val": {"per_class_iu": dict.fromkeys(names, 0.5)}}
    (folder / runs.METRICS).write_text(json.dumps(record) + "\n")
    return folder, best, latest, names


def load_script(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights(model):
    return [np.array(w) for w in model.weights]


def test_loader_reads_runs_keras_files_and_checkpoints(run_folder, tmp_path):
    folder, best, latest, names = run_folder
    for path, expected in [
        (folder, best),  # model.keras
        (folder / runs.MODEL, best),
        (folder / runs.BEST, best),
        (folder / runs.CHECKPOINTS, latest),
        (runs.latest_checkpoint(str(folder)), latest),  # a prefix
    ]:
        loaded = _weights(load_model_for_export(str(path)))
        assert len(loaded) == len(expected)
        for got, want in zip(loaded, expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=str(path))
        assert run_class_names(str(path)) == names
    with pytest.raises(
        FileNotFoundError, match="not a run folder, checkpoint folder or checkpoint prefix"
    ):
        load_model_for_export(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=r"no such \.keras file"):
        load_model_for_export(str(tmp_path / "nothing.keras"))


def test_run_without_model_keras_exports_its_best_checkpoint(run_folder, tmp_path, rng):
    folder, *_, names = run_folder
    copy = tmp_path / "run"
    copy.mkdir()
    for name in (runs.CONFIG, runs.METRICS):
        (copy / name).write_bytes((folder / name).read_bytes())
    os.symlink(folder / runs.BEST, copy / runs.BEST)
    version = export_checkpoint(str(copy), str(tmp_path / "models"))
    assert read_metadata(version)["class_names"] == names
    reference = load_model_for_export(str(folder / runs.BEST))
    images = rgb(rng, 40, 30, batch=1)
    out = tf.saved_model.load(version).signatures[constants.SERVING_DEFAULT](images=images)
    np.testing.assert_array_equal(
        out[constants.OUTPUT_CLASS_IDS], keras_class_ids(reference, images)
    )


def test_cli_exports_a_run_folder(run_folder, tmp_path, rng, capsys):
    folder, *_, names = run_folder
    base = tmp_path / "models"
    (base / "4").mkdir(parents=True)
    command = [sys.executable, str(REPO_ROOT / "serving" / "export.py"), "--checkpoint",
               str(folder), "--model-base-path", str(base), "--probabilities",
               "--max-pixels", "5000"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["version_dir"] == str(base / "5")
    assert sorted(report["signatures"]) == sorted(
        [constants.SERVING_DEFAULT, constants.PREDICT_IMAGE_BYTES, constants.PROBABILITIES]
    )
    metadata = read_metadata(report["version_dir"])
    assert metadata["class_names"] == names and metadata["max_pixels"] == 5000
    assert metadata["source"] == str(folder)
    assert metadata["run_config"] == runs.read_config(str(folder))
    images = rgb(rng, 50, 100, batch=1)
    loaded = tf.saved_model.load(report["version_dir"])
    out = loaded.signatures[constants.SERVING_DEFAULT](images=images)
    model = load_model_for_export(str(folder))
    np.testing.assert_array_equal(out[constants.OUTPUT_CLASS_IDS], keras_class_ids(model, images))
    cli = load_script(REPO_ROOT / "serving" / "export.py")
    assert cli.main([*command[2:], "--version", "5"]) == 1
    assert "5 exists: versions are never overwritten" in capsys.readouterr().err
    assert sorted(os.listdir(base)) == ["4", "5"]


def test_cli_refuses_bad_paths_and_budgets_before_loading(run_folder, tmp_path, capsys):
    cli = load_script(REPO_ROOT / "serving" / "export.py")
    a_file = tmp_path / "afile"
    a_file.write_text("")
    junk = tmp_path / "junk.keras"
    junk.write_text("junk")
    base = str(tmp_path / "models")
    for arguments, message in [
        (["--checkpoint", str(run_folder), "--model-base-path", str(a_file)],
         "the model base path is a file, not a folder"),
        (["--checkpoint", str(run_folder), "--model-base-path", base, "--max-pixels", str(2**63)],
         r"max_pixels must be an integer in [1, 2**63 - 1]"),
        (["--checkpoint", str(junk), "--model-base-path", base],
         "not a .keras file (a .keras file is a zip archive)"),
    ]:  # fmt: skip
        assert cli.main(arguments) == 1
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error, error
    assert not os.path.exists(base)


def test_exporters_sharing_a_pid_never_mix_their_folders(tmp_path):
    import threading

    from fcn_tf.export.versions import publish_version

    base = str(tmp_path / "models")
    started = threading.Barrier(2)

    def writer(mark):
        def write(folder):
            started.wait(10)  # both temporary folders exist at once
            for name in ("saved_model.pb", "variables"):
                with open(os.path.join(folder, name), "w") as file:
                    file.write(mark)

        return write

    done = {}
    threads = [
        threading.Thread(target=lambda m=m: done.setdefault(m, publish_version(base, writer(m))))
        for m in ("A", "B")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(os.path.basename(folder) for folder in done.values()) == ["1", "2"]
    for mark, folder in done.items():  # each version holds one exporter's files only
        assert {open(os.path.join(folder, n)).read() for n in os.listdir(folder)} == {mark}
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_a_subclassed_segmenter_exports(tmp_path, rng):
    class Scores(keras.Model):
        def __init__(self):
            super().__init__()
            self.score = keras.layers.Conv2D(3, 1)

        def call(self, images):
            return self.score(images)

    model = Scores()
    images = rgb(rng, 5, 7, batch=1)
    folder = export_saved_model(model, str(tmp_path / "models"))
    out = tf.saved_model.load(folder).signatures[constants.SERVING_DEFAULT](images=images)
    np.testing.assert_array_equal(out[constants.OUTPUT_CLASS_IDS], keras_class_ids(model, images))
