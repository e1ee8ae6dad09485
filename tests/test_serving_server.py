"""The local PredictionService end to end over 127.0.0.1: gRPC through TF Serving's own stubs
and REST, answers equal to the Keras model, metadata, and the status codes of bad requests."""

import base64
import json
import socket
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from helpers import keras_class_ids, random_thin_fcn
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fcn_tf.export import constants, export_saved_model
from fcn_tf.serving import GrpcClient, LocalServer, RestClient, ServingError
from fcn_tf.serving.config import single_model_config

NUM_CLASSES = 5
MAX_PIXELS = 64 * 64


def rgb(rng, *shape):
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fcn():
    return random_thin_fcn(NUM_CLASSES, seed=1)


@pytest.fixture(scope="module")
def server(fcn, tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "fcn"
    export_saved_model(fcn, str(base), max_pixels=MAX_PIXELS)
    config = single_model_config("fcn", str(base))
    with LocalServer(config, port=0, rest_port=0, poll_seconds=0.1, threads=4) as running:
        yield running


@pytest.fixture(scope="module")
def grpc_client(server):
    with GrpcClient(f"127.0.0.1:{server.port}", "fcn", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def rest_client(server):
    return RestClient(f"http://127.0.0.1:{server.rest_port}", "fcn", timeout=30)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def post(server, path, body):
    """``(HTTP status, JSON body)`` of a raw REST call."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


# -- answers equal the Keras model ----------------------------------------------------------


def test_raw_grpc_predict_equals_keras_and_names_the_version(fcn, stub, rng):
    images = rgb(rng, 2, 37, 29)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fcn"
    request.inputs[constants.INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(images))
    response = stub.Predict(request, timeout=30)
    class_ids = tf.make_ndarray(response.outputs[constants.OUTPUT_CLASS_IDS])
    assert class_ids.dtype == np.uint8
    expected = keras_class_ids(fcn, images)
    assert len(np.unique(expected)) > 1  # a constant map would hide a wrong answer
    np.testing.assert_array_equal(class_ids, expected)
    spec = response.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("fcn", 1, "serving_default")


def test_clients_predict_equals_keras_over_grpc_and_rest(fcn, grpc_client, rest_client, rng):
    images = rgb(rng, 3, 20, 33)
    expected = keras_class_ids(fcn, images)
    for client in (grpc_client, rest_client):
        np.testing.assert_array_equal(client.predict(images), expected)
        np.testing.assert_array_equal(client.predict(images[1]), expected[1])  # one image
        # "" names serving_default, to both clients as to the server.
        outputs = client.call({constants.INPUT_IMAGES: images}, signature="")
        np.testing.assert_array_equal(outputs[constants.OUTPUT_CLASS_IDS], expected)


def test_predict_bytes_equals_keras_for_png_and_jpeg(fcn, grpc_client, rest_client, rng):
    pictures = [rgb(rng, 31, 17), rgb(rng, 12, 40)]
    png = [tf.io.encode_png(p).numpy() for p in pictures]
    jpeg = tf.io.encode_jpeg(pictures[0], quality=90).numpy()
    expected = [keras_class_ids(fcn, p[None])[0] for p in pictures]
    expected.append(keras_class_ids(fcn, tf.io.decode_jpeg(jpeg, channels=3).numpy()[None])[0])
    for client in (grpc_client, rest_client):
        masks = client.predict_bytes([*png, jpeg])
        assert [m.shape for m in masks] == [(31, 17), (12, 40), (31, 17)]
        for mask, reference in zip(masks, expected, strict=True):
            np.testing.assert_array_equal(mask, reference)


def test_rest_row_and_columnar_formats_as_tf_serving(fcn, server, rng):
    images = rgb(rng, 2, 9, 14)
    expected = keras_class_ids(fcn, images)
    status, body = post(server, "/v1/models/fcn:predict", {"instances": images.tolist()})
    assert status == 200
    np.testing.assert_array_equal(body["predictions"], expected)
    named = {"instances": [{"images": image.tolist()} for image in images]}
    assert post(server, "/v1/models/fcn/versions/1:predict", named)[1] == body
    status, body = post(server, "/v1/models/fcn:predict", {"inputs": images.tolist()})
    np.testing.assert_array_equal(body["outputs"], expected)
    # Two outputs: one object per instance; strings as {"b64": ...}.
    png = base64.b64encode(tf.io.encode_png(images[0]).numpy()).decode()
    request = {"signature_name": "predict_image_bytes", "instances": [{"b64": png}]}
    status, body = post(server, "/v1/models/fcn:predict", request)
    assert status == 200
    (prediction,) = body["predictions"]
    assert prediction["image_size"] == [9, 14]
    np.testing.assert_array_equal(prediction["class_ids"], expected[0])


# -- metadata and status --------------------------------------------------------------------


def test_metadata_lists_the_savedmodel_signatures(server, stub, grpc_client, rest_client):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "fcn"
    response = stub.GetModelMetadata(request, timeout=30)
    definitions = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(definitions)
    loaded = tf.saved_model.load(server.registry.resolve("fcn", None).path)
    assert set(loaded.signatures) <= set(definitions.signature_def)
    inputs = definitions.signature_def["serving_default"].inputs
    assert inputs[constants.INPUT_IMAGES].dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in inputs[constants.INPUT_IMAGES].tensor_shape.dim] == [-1, -1, -1, 3]
    outputs = definitions.signature_def["predict_image_bytes"].outputs
    assert set(outputs) == {constants.OUTPUT_CLASS_IDS, constants.OUTPUT_IMAGE_SIZE}
    assert response.model_spec.version.value == 1
    # Both clients return it as TF Serving's REST API writes it.
    assert grpc_client.metadata() == rest_client.metadata()
    names = rest_client.metadata()["metadata"]["signature_def"]["signature_def"]
    assert set(names) == set(definitions.signature_def)


def test_model_status_over_grpc_and_rest(server, rest_client):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "fcn"
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request)
    finally:
        channel.close()
    (status,) = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert rest_client.status() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


# -- bad requests get TF Serving's status codes ----------------------------------------------

BAD_IMAGES = {
    "float32 pixels": (np.zeros((1, 8, 8, 3), np.float32), "must be uint8"),
    "rank 3": (np.zeros((8, 8, 3), np.uint8), r"got uint8 \[8, 8, 3\]"),
    "4 channels": (np.zeros((1, 8, 8, 4), np.uint8), r"got uint8 \[1, 8, 8, 4\]"),
    # 1200 x 1200 x 3 is over gRPC's default 4 MB message: refused for its pixels, not its size.
    "over max_pixels": (np.zeros((1, 1200, 1200, 3), np.uint8), "exceeds the limit of 4096"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_invalid_argument(case, grpc_client, rest_client, stub, rng):
    images, message = BAD_IMAGES[case]
    for client in (grpc_client, rest_client):
        if client is rest_client and case == "float32 pixels":
            images = images + 0.5  # JSON has no dtype: a fraction is what a float looks like
        with pytest.raises(ServingError, match=message) as caught:
            client.call({constants.INPUT_IMAGES: images})
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # The raw stub sees the same status; the server still answers afterwards.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fcn"
    request.inputs[constants.INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(images))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_client.predict(rgb(rng, 6, 6)).shape == (6, 6)


@pytest.mark.parametrize(
    "contents, message",
    [
        (b"not an image at all", "neither PNG nor JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt PNG"),
        ("big", "exceeds the limit of 4096 pixels"),
    ],
    ids=["garbage", "corrupt png", "oversize png"],
)
def test_bad_image_bytes_are_invalid_argument(contents, message, grpc_client, rest_client):
    if contents == "big":
        contents = tf.io.encode_png(np.zeros((70, 70, 3), np.uint8)).numpy()
    for client in (grpc_client, rest_client):
        with pytest.raises(ServingError, match=message) as caught:
            client.predict_bytes([contents])
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_proto_claiming_a_huge_shape_is_refused_unread(stub, grpc_client, rng):
    proto = tf.make_tensor_proto(np.zeros((1, 1, 1, 3), np.uint8))
    proto.tensor_content = b""
    proto.int_val.append(0)  # one value "repeated" over 10^12 elements
    proto.tensor_shape.dim[1].size = 10**6
    proto.tensor_shape.dim[2].size = 10**6
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fcn"
    request.inputs[constants.INPUT_IMAGES].CopyFrom(proto)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit" in caught.value.details()
    assert grpc_client.predict(rgb(rng, 5, 5)).shape == (5, 5)


def test_unknown_model_version_signature_and_inputs(server, grpc_client, rest_client, rng):
    image = rgb(rng, 6, 6)
    cases = [
        (GrpcClient(f"127.0.0.1:{server.port}", "nope"), grpc.StatusCode.NOT_FOUND),
        (GrpcClient(f"127.0.0.1:{server.port}", "fcn", version=9), grpc.StatusCode.NOT_FOUND),
        (RestClient(f"http://127.0.0.1:{server.rest_port}", "nope"), grpc.StatusCode.NOT_FOUND),
        (RestClient(f"http://127.0.0.1:{server.rest_port}", "fcn", 9), grpc.StatusCode.NOT_FOUND),
        # No labels in this config: TF Serving answers INVALID_ARGUMENT for an unknown label.
        (
            GrpcClient(f"127.0.0.1:{server.port}", "fcn", version_label="stable"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for client, code in cases:
        with pytest.raises(ServingError) as caught:
            client.predict(image)
        assert caught.value.code == code, client
    # TF Serving: FAILED_PRECONDITION, which REST sends as HTTP 400 like INVALID_ARGUMENT.
    unknown_signature = [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT]
    for client, code in zip((grpc_client, rest_client), unknown_signature, strict=True):
        with pytest.raises(ServingError, match='signature key "nope" not found') as caught:
            client.call({constants.INPUT_IMAGES: image[None]}, signature="nope")
        assert caught.value.code == code
        with pytest.raises(
            ServingError, match=r"missing \['images'\], unknown \['pixels'\]"
        ) as caught:
            client.call({"pixels": image[None]})
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_metadata_needs_the_signature_def_field(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "fcn"
    for fields, message in [([], "at least one"), (["signature_def", "x"], "not supported")]:
        request.metadata_field[:] = fields
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetModelMetadata(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in caught.value.details()


def test_rest_errors_are_json_with_tf_serving_statuses(server):
    assert post(server, "/v1/models/fcn:predict", b"{not json")[0] == 400
    status, body = post(server, "/v1/models/fcn:predict", {"instances": [[[[1, 2, 300]]]]})
    assert status == 400 and "do not fit uint8" in body["error"]
    status, body = post(server, "/v1/models/fcn:predict", {"instances": [[[1, 2]], [[1]]]})
    assert status == 400 and "unequal lengths" in body["error"]
    assert post(server, "/v1/models/fcn:predict", {"instances": [], "inputs": []})[0] == 400
    assert post(server, "/v2/elsewhere", {})[0] == 404
    status, body = post(server, "/v1/models/nope:predict", {"instances": [[[[1, 2, 3]]]]})
    assert status == 404 and "nope" in body["error"]


def test_a_negative_content_length_is_refused_not_waited_on(server):
    # read(-1) would wait for the client to close: a keep-alive client would hang forever.
    request = b"POST /v1/models/fcn:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
    reply = raw_reply(server.rest_port, request)
    assert reply.startswith("HTTP/1.1 400") and "non-negative" in reply


def test_a_chunked_body_is_read_as_tf_serving_does(server, fcn, rng):
    import http.client

    image = rgb(rng, 1, 9, 14)
    body = json.dumps({"instances": image.tolist()}).encode()
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]  # chunks of 100 bytes
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request("POST", "/v1/models/fcn:predict", body=iter(pieces),
                           encode_chunked=True)  # fmt: skip
        response = connection.getresponse()
        assert response.status == 200
        predictions = json.load(response)["predictions"]
    finally:
        connection.close()
    np.testing.assert_array_equal(predictions, keras_class_ids(fcn, image))


def raw_reply(port, request):
    """The whole reply to raw request bytes, the server closing the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    return reply.decode("latin-1")


CHUNKED = b"POST /v1/models/fcn:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "body, message",
    [
        # Each request ends where the server stops reading: bytes left unread when it closes
        # would make the kernel reset the connection, which may cost the client the reply.
        (b"-1\r\n", "bad chunk size line"),  # was read until the client hung up
        (b"0x3\r\n", "bad chunk size line"),
        (b"3\r\n[1]]\r\n", "not followed by CRLF"),  # a wrong size: 4 bytes came
    ],
)
def test_malformed_chunked_bodies_are_refused_at_once(server, body, message):
    reply = raw_reply(server.rest_port, CHUNKED + body)
    assert reply.startswith("HTTP/1.1 400") and message in reply


def test_a_body_over_the_limit_is_answered_to_a_client_still_sending(tmp_path):
    config = single_model_config("fcn", str(tmp_path / "empty"))
    with LocalServer(config, port=0, rest_port=0, max_message_bytes=10**6) as small:
        client = RestClient(f"http://127.0.0.1:{small.rest_port}", "fcn", timeout=30)
        # ~3.2 MB of JSON, beyond what the socket buffers take while the server does not read.
        images = np.zeros((1, 600, 600, 3), np.uint8)
        with pytest.raises(ServingError, match="exceeds the limit of 1000000") as caught:
            client.call({constants.INPUT_IMAGES: images})
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT  # not a broken pipe
        # The same with a chunked body of 2 MB in 64 kB chunks.
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", small.rest_port, timeout=30)
        try:
            chunks = (b"x" * 65536 for _ in range(32))
            connection.request("POST", "/v1/models/fcn:predict", body=chunks, encode_chunked=True)
            response = connection.getresponse()
            assert response.status == 400
            assert "chunked body exceeds the limit of 1000000" in json.load(response)["error"]
        finally:
            connection.close()


def test_a_server_that_cannot_bind_releases_what_it_started(server, tmp_path):
    config = single_model_config("fcn", str(tmp_path / "empty"))
    taken = LocalServer(config, port=0, rest_port=server.rest_port, poll_seconds=0.1)
    with pytest.raises(OSError):
        taken.start()
    assert not taken._started and not taken._watcher._thread.is_alive()
