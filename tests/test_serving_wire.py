"""Tensors and requests on the wire: TensorProtos, TF Serving's JSON formats, REST routes and
status codes; no server needed."""

import grpc
import numpy as np
import pytest
import tensorflow as tf

from fcn_tf.serving.errors import ServingError, from_http_status, from_tf_error
from fcn_tf.serving.rest import format_outputs, parse_inputs, route
from fcn_tf.serving.servable import Signature
from fcn_tf.serving.tensors import from_json, from_proto, to_json, to_proto

UINT8 = tf.TensorSpec([None, None, None, 3], tf.uint8)
STRINGS = tf.TensorSpec([None], tf.string)


def invalid(match):
    return pytest.raises(ServingError, match=match)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32", "bool"])
def test_protos_round_trip_arrays(dtype, rng):
    array = (rng.uniform(0, 200, (2, 3, 4)) > 100) if dtype == "bool" else rng.uniform(0, 200, 24)
    array = np.asarray(array).astype(dtype).reshape(2, 3, 4)
    back = from_proto(to_proto(array), "x")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    strings = np.array([b"\x00\xff", b""], dtype=object)
    assert from_proto(to_proto(strings), "x").tolist() == strings.tolist()


def test_a_proto_whose_content_does_not_fit_its_shape_is_invalid():
    proto = to_proto(np.zeros((2, 3), np.uint8))
    proto.tensor_shape.dim[0].size = 5
    with invalid("input 'images' is not a readable TensorProto"):
        from_proto(proto, "images")


def test_json_numbers_must_fit_the_dtype():
    np.testing.assert_array_equal(from_json([[[[0, 255, 7]]]], UINT8, "images"), [[[[0, 255, 7]]]])
    assert from_json([[[[0, 255, 7]]]], UINT8, "images").dtype == np.uint8
    with invalid("values -1..255 do not fit uint8"):
        from_json([[[[-1, 255, 7]]]], UINT8, "images")
    with invalid("must be uint8 values, got float64"):
        from_json([[[[0.5, 1, 2]]]], UINT8, "images")
    with invalid("unequal lengths"):
        from_json([[[[1, 2, 3]], [[1, 2]]]], UINT8, "images")
    floats = from_json([[1, 2.5]], tf.TensorSpec([None, 2], tf.float32), "x")
    assert floats.dtype == np.float32 and floats.tolist() == [[1.0, 2.5]]


def test_json_strings_are_b64_objects_or_text():
    assert from_json([{"b64": "AP8="}, "é"], STRINGS, "s").tolist() == [b"\x00\xff", "é".encode()]
    with invalid("bad base64"):
        from_json([{"b64": "A=P8"}], STRINGS, "s")
    with invalid("must hold strings"):
        from_json([3], STRINGS, "s")
    binary = np.array([b"\x00\xff"], dtype=object)
    assert to_json(binary, "image_bytes") == [{"b64": "AP8="}]
    assert to_json(np.array([b"ok"], dtype=object), "label") == ["ok"]
    assert from_json(to_json(binary, "x", binary=True), STRINGS, "x").tolist() == [b"\x00\xff"]


def test_b64_as_tf_serving_reads_it_without_padding_and_across_line_breaks():
    import base64

    data = bytes(range(256)) * 3
    wrapped = base64.encodebytes(data).decode()  # MIME: a line break every 76 characters
    assert "\n" in wrapped
    unpadded = base64.b64encode(data[:-1]).decode().rstrip("=")
    decoded = from_json([{"b64": wrapped}, {"b64": unpadded}], STRINGS, "s").tolist()
    assert decoded == [data, data[:-1]]
    with invalid("bad base64"):
        from_json([{"b64": "AAAAA"}], STRINGS, "s")  # 5 characters: no padding makes it whole


def test_rest_routes():
    assert route("/v1/models/fcn") == ("fcn", None, "", "")
    assert route("/v1/models/fcn/versions/12:predict") == ("fcn", 12, "", ":predict")
    assert route("/v1/models/fcn/labels/canary/metadata") == ("fcn", None, "canary", "/metadata")
    for path in ["/v1/models", "/v1/models/fcn/versions/x", "/v1/models/a/b", "/v2/models/fcn"]:
        with pytest.raises(ServingError) as caught:
            route(path)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_a_version_beyond_int64_is_invalid_argument_as_in_tf_serving():
    assert route(f"/v1/models/fcn/versions/{2**63 - 1}")[1] == 2**63 - 1
    with pytest.raises(ServingError, match="Failed to convert version") as caught:
        route(f"/v1/models/fcn/versions/{2**63}:predict")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}"])
def test_rest_client_turns_a_dropped_connection_into_unavailable(reply):
    import socket
    import threading

    from fcn_tf.serving import RestClient

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_and_hang_up():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(reply)  # nothing, or a reply cut short

    thread = threading.Thread(target=answer_and_hang_up, daemon=True)
    thread.start()
    client = RestClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "fcn", timeout=10)
    with pytest.raises(ServingError, match=r"127\.0\.0\.1") as caught:
        client.status()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    thread.join(10)
    listener.close()


def test_rest_client_timeout_while_sending_is_deadline_exceeded():
    import socket

    from fcn_tf.serving import RestClient

    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never reads
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = RestClient(url, "fcn", timeout=0.5)
    # A body far beyond the socket buffers: the send itself times out (urllib's URLError).
    with pytest.raises(ServingError, match="timed out") as caught:
        client._request(f"{url}/v1/models/fcn:predict", {"inputs": "0" * 50_000_000})
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    listener.close()


def test_row_and_columnar_requests_give_the_same_arrays():
    signature = Signature("serving_default", None, {"images": UINT8}, ("class_ids",))
    images = np.arange(2 * 2 * 3 * 3).reshape(2, 2, 3, 3) % 256
    for body, row in [
        ({"instances": images.tolist()}, True),
        ({"instances": [{"images": image.tolist()} for image in images]}, True),
        ({"inputs": images.tolist()}, False),
        ({"inputs": {"images": images.tolist()}}, False),
    ]:
        inputs, is_row = parse_inputs(body, signature)
        assert is_row == row
        np.testing.assert_array_equal(inputs["images"], images)
    with invalid("exactly one of"):
        parse_inputs({"instances": [], "inputs": []}, signature)
    with invalid(r"missing \['images'\], unknown \['pixels'\]"):
        parse_inputs({"instances": [{"pixels": [1]}]}, signature)
    two = Signature("pair", None, {"a": STRINGS, "b": STRINGS}, ("y",))
    with invalid("name them"):
        parse_inputs({"instances": ["x"]}, two)
    with invalid("same inputs"):
        parse_inputs({"instances": [{"a": "x", "b": "y"}, {"a": "x"}]}, two)


def test_responses_per_instance_or_per_output():
    outputs = {"class_ids": np.zeros((2, 1, 2), np.uint8), "image_size": np.array([[1, 2]] * 2)}
    rows = format_outputs(outputs, row=True)["predictions"]
    assert rows == [{"class_ids": [[0, 0]], "image_size": [1, 2]}] * 2
    assert format_outputs(outputs, row=False)["outputs"]["image_size"] == [[1, 2], [1, 2]]
    single = {"class_ids": np.ones((1, 1, 1), np.uint8)}
    assert format_outputs(single, row=True) == {"predictions": [[[1]]]}
    assert format_outputs(single, row=False) == {"outputs": [[[1]]]}


def test_status_codes_map_as_in_tf_serving():
    cases = [
        (tf.errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (tf.errors.NotFoundError, grpc.StatusCode.NOT_FOUND, 404),
        (tf.errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (tf.errors.UnimplementedError, grpc.StatusCode.UNIMPLEMENTED, 501),
        (tf.errors.InternalError, grpc.StatusCode.INTERNAL, 500),
    ]
    for tf_error, code, http in cases:
        error = from_tf_error(tf_error(None, None, "boom"))
        assert (error.code, error.http_status, error.message) == (code, http, "boom")
        if http != 500:
            assert from_http_status(http) == code
    assert from_http_status(418) == grpc.StatusCode.UNKNOWN
