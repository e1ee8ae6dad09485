"""TF Serving's config files parse with its protos; the CLIs end to end: the local server in
its own process, the client writing colourised masks over gRPC and REST."""

import importlib.util
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from google.protobuf import text_format
from helpers import REPO_ROOT, free_port, keras_class_ids, pixel_classifier
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2

from fcn_tf.export import export_saved_model
from fcn_tf.palette import colorize, palette_for
from fcn_tf.serving import GrpcClient, LocalServer, ServingError
from fcn_tf.serving.config import (
    model_configs,
    parse_batching_parameters,
    read_batching_parameters,
    read_model_server_config,
    single_model_config,
)

MODELS_CONFIG = REPO_ROOT / "serving" / "models.config"
BATCHING = REPO_ROOT / "serving" / "batching_parameters.txt"


def test_the_example_model_config_parses_as_a_model_server_config():
    # The real proto straight from tensorflow-serving-api, as tensorflow_model_server reads it.
    config = text_format.Parse(
        MODELS_CONFIG.read_text(), model_server_config_pb2.ModelServerConfig()
    )
    models = {model.name: model for model in config.model_config_list.config}
    assert sorted(models) == ["camvid_fcn8s", "shapes_fcn8s"]
    shapes = models["shapes_fcn8s"]
    assert shapes.base_path == "/models/shapes_fcn8s"
    assert shapes.model_version_policy.latest.num_versions == 2
    assert dict(shapes.version_labels) == {"stable": 1}
    assert all(model.model_platform == "tensorflow" for model in models.values())
    assert read_model_server_config(str(MODELS_CONFIG)) == config


def test_the_local_server_takes_the_example_config_before_any_export_exists():
    config = read_model_server_config(str(MODELS_CONFIG))
    with LocalServer(config, port=0, rest_port=None) as server:
        assert sorted(server.registry.models) == ["camvid_fcn8s", "shapes_fcn8s"]
        with GrpcClient(f"127.0.0.1:{server.port}", "camvid_fcn8s") as client:
            with pytest.raises(ServingError, match="no version loaded yet"):
                client.predict(np.zeros((4, 4, 3), np.uint8))


def test_bad_model_configs_are_refused_naming_the_problem(tmp_path):
    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { nam: "x" } }')
    with pytest.raises(ValueError, match=str(path)):
        read_model_server_config(str(path))
    twice = single_model_config("fcn", "/a")
    twice.model_config_list.config.add(name="fcn", base_path="/b")
    with pytest.raises(ValueError, match="'fcn' appears more than once"):
        model_configs(twice)
    other = single_model_config("fcn", "/a")
    other.model_config_list.config[0].model_platform = "pytorch"
    with pytest.raises(ValueError, match="platform 'pytorch'"):
        model_configs(other)


def test_the_batching_parameters_example_is_valid_for_tf_serving():
    parameters = read_batching_parameters(str(BATCHING))
    assert parameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    sizes = list(parameters.allowed_batch_sizes)
    # TF Serving's rules: increasing allowed sizes, the last one equal to max_batch_size.
    assert sizes == sorted(set(sizes)) and sizes[-1] == parameters.max_batch_size.value
    assert parameters.batch_timeout_micros.value > 0
    assert parameters.num_batch_threads.value >= 1
    assert parameters.max_enqueued_batches.value >= 1


def test_batching_parameters_have_tf_serving_field_numbers():
    # Field numbers decide the binary form: field 1 holds an Int64Value (field 1 = 8),
    # 6 the packed allowed sizes, 7 the padding flag (session_bundle_config.proto).
    wire = parse_batching_parameters("max_batch_size { value: 8 }").SerializeToString()
    assert wire == b"\x0a\x02\x08\x08"
    wire = parse_batching_parameters("allowed_batch_sizes: [1, 2]").SerializeToString()
    assert wire == b"\x32\x02\x01\x02"
    wire = parse_batching_parameters("pad_variable_length_inputs: true").SerializeToString()
    assert wire == b"\x38\x01"
    wire = parse_batching_parameters('thread_pool_name { value: "b" }').SerializeToString()
    assert wire == b"\x2a\x03\x0a\x01b"
    with pytest.raises(ValueError, match="max_batch_sizes"):
        parse_batching_parameters("max_batch_sizes { value: 8 }")


# -- the CLIs -------------------------------------------------------------------------------


def client_cli():
    spec = importlib.util.spec_from_file_location("serving_client", REPO_ROOT / "serving/client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_local_server_and_client_clis_end_to_end(tmp_path, rng):
    model = pixel_classifier(4, seed=3)
    export_saved_model(model, str(tmp_path / "fcn"))
    grpc_port, rest_port = free_port(), free_port()
    command = [
        sys.executable,
        str(REPO_ROOT / "serving" / "local_server.py"),
        "--model-name=fcn",
        f"--model-base-path={tmp_path / 'fcn'}",
        f"--port={grpc_port}",
        f"--rest-port={rest_port}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(180, server.kill)
    watchdog.start()
    try:
        ready = server.stdout.readline()
        assert f"serving gRPC on 127.0.0.1:{grpc_port}" in ready, ready
        pictures = {"a.png": rng.integers(0, 256, (13, 21, 3), np.uint8)}
        pictures["b.png"] = rng.integers(0, 256, (8, 5, 3), np.uint8)
        for name, picture in pictures.items():
            Image.fromarray(picture).save(tmp_path / name)
        paths = [str(tmp_path / name) for name in pictures]
        cli = client_cli()
        for where, extra in [
            (["--server", f"127.0.0.1:{grpc_port}"], []),
            (["--rest", f"http://127.0.0.1:{rest_port}"], ["--pixels"]),
        ]:
            out = tmp_path / f"masks_{len(extra)}"
            summary = cli.main([*where, "--model", "fcn", "--out", str(out), *extra, *paths])
            assert [row["size"] for row in summary] == [[13, 21], [8, 5]]
            for name, picture in pictures.items():
                labels = keras_class_ids(model, picture[None])[0]
                expected = colorize(labels, palette_for([]))
                np.testing.assert_array_equal(np.asarray(Image.open(out / name)), expected)
            assert sorted(os.listdir(out)) == ["a.png", "b.png"]  # no temporary left
        # --pixels reads a 16-bit gray PNG scaled to 8 bits (Pillow's RGB conversion clips).
        gray = rng.integers(0, 65536, (6, 7)).astype(np.uint16)
        Image.fromarray(gray).save(tmp_path / "deep.png")
        cli.main(["--rest", f"http://127.0.0.1:{rest_port}", "--model", "fcn", "--pixels",
                  "--out", str(tmp_path / "deep"), str(tmp_path / "deep.png")])  # fmt: skip
        rgb8 = np.repeat(np.round(gray / 257).astype(np.uint8)[..., None], 3, axis=-1)
        expected = colorize(keras_class_ids(model, rgb8[None])[0], palette_for([]))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "deep/deep.png")), expected)
        # Two images with one stem get two masks (numbered as training/predict.py does).
        (tmp_path / "other").mkdir()
        Image.fromarray(pictures["b.png"]).save(tmp_path / "other" / "a.jpg", quality=95)
        both = [paths[0], str(tmp_path / "other/a.jpg")]
        grpc_args = ["--server", f"127.0.0.1:{grpc_port}", "--model", "fcn"]
        summary = cli.main([*grpc_args, "--out", str(tmp_path / "clash"), *both])
        assert [row["mask"].rsplit("/", 1)[1] for row in summary] == ["a.png", "a-2.png"]
        assert Image.open(tmp_path / "clash/a-2.png").size == (5, 8)
        with pytest.raises(SystemExit, match="NOT_FOUND"):
            cli.main(["--server", f"127.0.0.1:{grpc_port}", "--model", "x", paths[0]])
        # --pixels reads the image here: a file that is not one is named, not a traceback.
        (tmp_path / "text.png").write_text("not a picture")
        rest_args = ["--rest", f"http://127.0.0.1:{rest_port}", "--model", "fcn", "--pixels"]
        with pytest.raises(SystemExit, match=r"text\.png: not a readable image"):
            cli.main([*rest_args, "--out", str(tmp_path / "bad"), str(tmp_path / "text.png")])
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        watchdog.cancel()
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
