"""Version watching of the local server: a new version replaces the old one only once fully
loaded, concurrent clients lose no request while one is exported; versions that fail to load,
temporary folders, version policies and labels."""

import contextlib
import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from helpers import keras_class_ids, pixel_classifier
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from fcn_tf.export import constants, export_saved_model
from fcn_tf.serving import GrpcClient, LocalServer, RestClient, ServingError, registry
from fcn_tf.serving.config import parse_model_server_config, single_model_config

IMAGE = np.random.default_rng(0).integers(0, 256, (1, 12, 10, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models():
    """Two versions of a model whose answers on IMAGE differ."""
    first, second = pixel_classifier(4, seed=1), pixel_classifier(4, seed=2)
    assert (keras_class_ids(first, IMAGE) != keras_class_ids(second, IMAGE)).any()
    return first, second


@pytest.fixture(scope="module")
def expected(models):
    return {
        version: keras_class_ids(model, IMAGE)
        for version, model in zip((1, 2), models, strict=True)
    }


@pytest.fixture(scope="module")
def staged(models, tmp_path_factory):
    """Versions 1 and 2 exported once, to copy into each test's base path."""
    base = tmp_path_factory.mktemp("staged")
    for version, model in enumerate(models, 1):
        export_saved_model(model, str(base), version)
    return base


def copy_version(staged, base, version, as_version=None):
    """Publish a staged version as the exporter does: a hidden folder, then one rename."""
    hidden = os.path.join(base, f".tmp-copy-{version}")
    # copy, not copy2: fresh modification times, as a new export has.
    shutil.copytree(os.path.join(staged, str(version)), hidden, copy_function=shutil.copy)
    os.rename(hidden, os.path.join(base, str(as_version or version)))


@contextlib.contextmanager
def serving(config, rest=False):
    with LocalServer(config, port=0, rest_port=0 if rest else None, poll_seconds=0.05) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            yield server, prediction_service_pb2_grpc.PredictionServiceStub(channel)
        finally:
            channel.close()


def predict(stub, name="fcn", version=None, label=None):
    """``(version that answered, class ids)`` of one request on IMAGE."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[constants.INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(IMAGE))
    response = stub.Predict(request, timeout=30)
    class_ids = tf.make_ndarray(response.outputs[constants.OUTPUT_CLASS_IDS])
    return response.model_spec.version.value, class_ids


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_new_version_is_served_only_once_fully_loaded(staged, expected, tmp_path, monkeypatch):
    copy_version(staged, tmp_path, 1)
    loading, release = threading.Event(), threading.Event()
    real_load = registry.load_version

    def slow_load(path, version, warmup=True):
        if version == 2:
            loading.set()
            assert release.wait(60)
        return real_load(path, version, warmup)

    monkeypatch.setattr(registry, "load_version", slow_load)
    with serving(single_model_config("fcn", str(tmp_path))) as (server, stub):
        copy_version(staged, tmp_path, 2)
        assert loading.wait(30)
        # Version 2 is on disk and being loaded: version 1 answers every request meanwhile.
        for _ in range(5):
            version, class_ids = predict(stub)
            assert version == 1
            np.testing.assert_array_equal(class_ids, expected[1])
        assert [row["version"] for row in server.registry.model("fcn").status()] == [1]
        release.set()
        wait_for(lambda: predict(stub)[0] == 2)
        np.testing.assert_array_equal(predict(stub)[1], expected[2])
        # The default policy serves the newest version only: version 1 is gone.
        with pytest.raises(grpc.RpcError) as caught:
            predict(stub, version=1)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_concurrent_clients_lose_no_request_while_a_version_is_exported(
    models, expected, staged, tmp_path
):
    copy_version(staged, tmp_path, 1)
    clients, before, most = 8, 5, 400  # requests per client: `before` the export, then at most
    started = threading.Barrier(clients + 1)
    answers, failures = [[] for _ in range(clients)], []

    def client(index, port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            for count in range(before + most):
                if count == before:
                    started.wait(60)
                answers[index].append(predict(stub))
                if answers[index][-1][0] == 2:
                    break
                time.sleep(0.01)
        except Exception as error:
            failures.append(error)
            started.abort()
        finally:
            channel.close()

    with serving(single_model_config("fcn", str(tmp_path))) as (server, _):
        threads = [threading.Thread(target=client, args=(i, server.port)) for i in range(clients)]
        for thread in threads:
            thread.start()
        started.wait(60)
        export_saved_model(models[1], str(tmp_path))  # version 2, while the clients ask
        for thread in threads:
            thread.join(120)
    assert not failures
    for seen in answers:
        versions = [version for version, _ in seen]
        assert versions[-1] == 2, "a client never saw version 2"
        assert versions == sorted(versions)  # once swapped, never back
        assert len(seen) <= before + most
        for version, class_ids in seen:
            np.testing.assert_array_equal(class_ids, expected[version])
    assert sum(len(seen) for seen in answers) >= clients * (before + 1)


def test_a_version_that_fails_to_load_is_skipped_and_retried_when_rewritten(
    staged, expected, tmp_path
):
    copy_version(staged, tmp_path, 1)
    copy_version(staged, tmp_path, 2)
    os.makedirs(tmp_path / "3")
    (tmp_path / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    os.makedirs(tmp_path / ".tmp-4-123")  # an exporter at work: never looked at
    with serving(single_model_config("fcn", str(tmp_path)), rest=True) as (server, stub):
        version, class_ids = predict(stub)
        assert version == 2
        np.testing.assert_array_equal(class_ids, expected[2])
        statuses = RestClient(f"http://127.0.0.1:{server.rest_port}", "fcn").status()
        rows = statuses["model_version_status"]
        assert [(row["version"], row["state"]) for row in rows] == [
            ("3", "END"),
            ("2", "AVAILABLE"),
        ]
        assert rows[0]["status"]["error_code"] == "UNKNOWN"
        assert f"{os.sep}3{os.sep}saved_model.pb" in rows[0]["status"]["error_message"]
        # Rewritten (a new saved_model.pb): loaded on the next scan.
        shutil.rmtree(tmp_path / "3")
        copy_version(staged, tmp_path, 1, as_version=3)
        wait_for(lambda: predict(stub)[0] == 3)
        np.testing.assert_array_equal(predict(stub)[1], expected[1])


def test_a_version_seen_half_copied_is_retried_once_complete(staged, expected, tmp_path):
    copy_version(staged, tmp_path, 1)
    # A plain `cp -r` into the base path: saved_model.pb lands before the variables.
    os.makedirs(tmp_path / "2")
    shutil.copy(staged / "2" / "saved_model.pb", tmp_path / "2" / "saved_model.pb")
    with serving(single_model_config("fcn", str(tmp_path))) as (server, stub):
        assert predict(stub)[0] == 1
        assert [row["state"] for row in server.registry.model("fcn").status()][:1] == ["END"]
        for entry in (staged / "2").iterdir():  # the rest; saved_model.pb stays untouched
            if entry.is_dir():
                shutil.copytree(entry, tmp_path / "2" / entry.name)
            elif entry.name != "saved_model.pb":
                shutil.copy(entry, tmp_path / "2" / entry.name)
        wait_for(lambda: predict(stub)[0] == 2)
        np.testing.assert_array_equal(predict(stub)[1], expected[2])


def test_zero_padded_version_folders_are_served_and_never_overwritten(staged, expected, tmp_path):
    from fcn_tf.export import list_versions
    from fcn_tf.export.versions import check_free

    copy_version(staged, tmp_path, 1)
    os.rename(tmp_path / "1", tmp_path / "007")  # as TF Serving's own test data names them
    assert list_versions(str(tmp_path)) == [7]
    with pytest.raises(FileExistsError, match="007 exists"):
        check_free(str(tmp_path), 7)
    with serving(single_model_config("fcn", str(tmp_path))) as (_, stub):
        version, class_ids = predict(stub)
        assert version == 7
        np.testing.assert_array_equal(class_ids, expected[1])


def test_version_policies_and_labels_of_a_model_config(staged, expected, tmp_path):
    copy_version(staged, tmp_path, 1)
    copy_version(staged, tmp_path, 2)
    config = parse_model_server_config(f"""
        model_config_list {{
          config {{
            name: "fcn" base_path: "{tmp_path}" model_platform: "tensorflow"
            model_version_policy {{ all {{}} }}
            version_labels {{ key: "stable" value: 1 }}
            version_labels {{ key: "canary" value: 2 }}
            version_labels {{ key: "gone" value: 7 }}
          }}
          config {{
            name: "pinned" base_path: "{tmp_path}"
            model_version_policy {{ specific {{ versions: 1 }} }}
          }}
        }}""")
    with serving(config) as (server, stub):
        assert predict(stub)[0] == 2  # no version asked: the newest loaded
        for kwargs, version in [
            ({"version": 1}, 1),
            ({"label": "stable"}, 1),
            ({"label": "canary"}, 2),
            ({"name": "pinned"}, 1),
        ]:
            answered, class_ids = predict(stub, **kwargs)
            assert answered == version, kwargs
            np.testing.assert_array_equal(class_ids, expected[version])
        for kwargs, code in [
            ({"label": "nope"}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"label": "gone"}, grpc.StatusCode.NOT_FOUND),
            ({"name": "pinned", "version": 2}, grpc.StatusCode.NOT_FOUND),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                predict(stub, **kwargs)
            assert caught.value.code() == code, kwargs
        with GrpcClient(f"127.0.0.1:{server.port}", "fcn", version_label="stable") as client:
            np.testing.assert_array_equal(client.predict(IMAGE), expected[1])


def test_a_server_starts_on_an_empty_base_path_and_serves_the_first_export(
    models, expected, tmp_path, caplog
):
    with serving(single_model_config("fcn", str(tmp_path / "not_yet")), rest=True) as (server, _):
        # Said once (not at every poll), naming the model and the path.
        server.registry.model("fcn").refresh()
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == [f"model 'fcn': base path {tmp_path / 'not_yet'} does not exist "
                            "(no numbered version folder to serve)"]  # fmt: skip
        client = GrpcClient(f"127.0.0.1:{server.port}", "fcn")
        with pytest.raises(ServingError, match="no version loaded yet") as caught:
            client.predict(IMAGE)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        # Status too is NOT_FOUND (404), as TF Serving's: a readiness probe sees no OK yet.
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", "fcn")
        with pytest.raises(ServingError, match="Could not find any versions") as caught:
            rest.status()
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        export_saved_model(models[0], str(tmp_path / "not_yet"))
        wait_for(lambda: bool(server.registry.model("fcn").servables))
        np.testing.assert_array_equal(client.predict(IMAGE), expected[1])
        assert [row["state"] for row in rest.status()["model_version_status"]] == ["AVAILABLE"]
        client.close()


def test_a_savedmodel_the_warm_up_image_does_not_fit_still_serves(tmp_path):
    # Not an fcn_tf export: float32 images of one fixed size.
    module = tf.Module()
    module.serve = tf.function(
        lambda images: {"mean": tf.reduce_mean(images, axis=[1, 2, 3])},
        input_signature=[tf.TensorSpec([None, 24, 24, 3], tf.float32, name="images")],
    )
    tf.saved_model.save(module, str(tmp_path / "other" / "1"), signatures=module.serve)
    with serving(single_model_config("other", str(tmp_path / "other"))) as (server, _):
        with GrpcClient(f"127.0.0.1:{server.port}", "other") as client:
            images = np.full((2, 24, 24, 3), 3.0, np.float32)
            np.testing.assert_allclose(client.call({"images": images})["mean"], [3.0, 3.0])
        assert [row["state"] for row in server.registry.model("other").status()] == ["AVAILABLE"]
