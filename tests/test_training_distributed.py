"""The Trainer under tf.distribute: replicas and workers train exactly as one device does.

Each run is a fresh interpreter: logical CPU devices and TF_CONFIG must be set before
TensorFlow initialises.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import tensorflow as tf
from conftest import TINY_VGG
from helpers import REPO_ROOT, run_python_json

from fcn_tf.data.records import Sample, encode_example
from fcn_tf.training.config import from_dict
from fcn_tf.training.loop import build_model

NUM_CLASSES = 3
STEPS = 3
TIMEOUT = 180  # seconds for any one interpreter


def _write_records(path, seed: int, count: int, size: int, ignored: list[int]) -> list[Sample]:
    """``count`` random images; image i has ``ignored[i]`` rows of ignore pixels (255)."""
    rng = np.random.default_rng(seed)
    samples = []
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index in range(count):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            label = rng.integers(0, NUM_CLASSES, (size, size)).astype(np.uint8)
            label[: ignored[index]] = 255
            sample = Sample(f"{seed}-{index}.png", image, label)
            writer.write(encode_example(sample, size, size))
            samples.append(sample)
    return samples


def _config(train: str, batch_size: int, crop_size: int, **data) -> dict:
    """A tiny FCN-8s recipe: SGD without accumulation, no validation split, no export."""
    return {
        "model": {
            "output_stride": 8,
            "geometry": "same",
            # Dropout draws differ between replicas; it has no place in an exactness test.
            "backbone_options": {**TINY_VGG, "dropout": 0.0},
        },
        "data": {
            "train": train,
            "val": None,
            "dataset": None,
            "num_classes": NUM_CLASSES,
            "batch_size": batch_size,
            "crop_size": crop_size,
            **data,
        },
        # No weight decay: every change of a weight then comes from the data.
        "solver": {"optimizer": "sgd", "accumulate": 1, "learning_rate": 0.1, "weight_decay": 0.0},
        "run": {"steps_per_epoch": STEPS, "epochs": 1, "deterministic": True, "export": False},
    }


def _assert_trained_alike(actual: dict, expected: dict, initial: dict, message: str) -> None:
    """Same weights, same updates (to 0.1% plus a few float32 ulps), and real updates."""
    assert actual.keys() == expected.keys() == initial.keys(), message
    for name, start in initial.items():
        where = f"{message}: {name}"
        np.testing.assert_allclose(actual[name], expected[name], 1e-5, 1e-6, err_msg=where)
        update = np.abs(expected[name] - start).max(initial=0.0)
        ulps = 8 * np.spacing(np.abs(expected[name]).max(initial=0.0))
        np.testing.assert_allclose(
            actual[name] - start,
            expected[name] - start,
            rtol=0,
            atol=1e-3 * update + ulps,
            err_msg=f"{where} (update)",
        )
    # Equal weights prove nothing unless training moved them, from the scores (zeros at
    # first) down to the first convolution, far past the tolerances above.
    updates = {name: np.abs(expected[name] - start).max() for name, start in initial.items()}
    assert max(updates.values()) > 1e-3 and updates["conv1_1/kernel"] > 1e-5, (message, updates)


def _assert_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


def _weights(path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return dict(saved)


# A Trainer that keeps the weights it starts from, to show that training moved them.
_RECORDING = """
class Recording(Trainer):
    def _setup(self, resume):
        super()._setup(resume)
        self.initial = {w.path: w.numpy() for w in self.model.weights}
"""

_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import copy, json, os
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from fcn_tf.training.config import from_dict
    from fcn_tf.training.loop import Trainer
    RECORDING

    args = json.loads(os.environ["FCN_TEST_ARGS"])
    strategies = {
        "default": tf.distribute.get_strategy(),
        "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    out = {}
    for normalize, learning_rate, accumulate in args["cases"]:
        for name, strategy in strategies.items():
            values = copy.deepcopy(args["config"])
            values["solver"].update(
                normalize=normalize, learning_rate=learning_rate, accumulate=accumulate
            )
            run = os.path.join(args["dir"], f"{normalize}-{accumulate}-{name}")
            trainer = Recording(from_dict(values), run, strategy=strategy, verbose=0)
            step = trainer.fit()["step"]
            # Every replica's copy of every variable, so a replica that drifted shows up.
            diverged = [w.path for w in trainer.model.weights if hasattr(w.value, "values")
                        and len({np.asarray(c).tobytes() for c in w.value.values}) > 1]
            # Every replica's gradient sums, cleared by the last update.
            sums = [c for s in trainer.gradient_sums
                    for c in strategy.experimental_local_results(s)]
            np.savez(run + "-initial.npz", **trainer.initial)
            np.savez(run + "-final.npz", **{w.path: w.numpy() for w in trainer.model.weights})
            out[f"{normalize}-{accumulate}-{name}"] = {
                "step": step,
                "updates": int(trainer.optimizer.iterations.numpy()),
                "replicas": strategy.num_replicas_in_sync,
                "diverged": diverged,
                "sums": len(sums),
                "sums_cleared": not any(np.any(np.asarray(c)) for c in sums),
            }
    print("RESULT" + json.dumps(out))
    """
).replace("RECORDING", _RECORDING)


def _mirrored_records(tmp_path) -> dict:
    """Two shards of 4 images with 0 to 30 ignored rows, and an augmenting tiny recipe."""
    for shard in range(2):
        _write_records(tmp_path / f"train-{shard}.tfrecord", shard, 4, 40, [0, 5, 17, 30])
    return _config(
        str(tmp_path / "train-*.tfrecord"),
        batch_size=4,
        crop_size=32,
        mirror=True,
        scale_range=[0.75, 1.5],
    )


def _assert_mirrored_matches_default(tmp_path, config: dict, cases: list) -> None:
    """Train each ``[normalize, learning_rate, accumulate]`` case under both strategies in
    one fresh interpreter; both must take the same updates to the same weights."""
    args = {"config": config, "dir": str(tmp_path / "runs"), "cases": cases}
    result = run_python_json(
        _MIRRORED_SCRIPT, env={"FCN_TEST_ARGS": json.dumps(args)}, timeout=TIMEOUT
    )
    for normalize, _, accumulate in cases:
        case = f"{normalize}-{accumulate}"
        single, mirrored = result[f"{case}-default"], result[f"{case}-mirrored"]
        assert single["step"] == mirrored["step"] == STEPS
        # The optimizer counts updates, not micro-batches (the resumed step comes from it).
        assert single["updates"] == mirrored["updates"] == STEPS
        assert (single["replicas"], mirrored["replicas"]) == (1, 2)
        assert not mirrored["diverged"], f"replicas' copies differ: {mirrored['diverged']}"
        # One sum per trainable variable and replica when accumulating, all zero again.
        assert (single["sums"] > 0) == (accumulate > 1) and mirrored["sums"] == 2 * single["sums"]
        assert single["sums_cleared"] and mirrored["sums_cleared"]
        prefix = tmp_path / "runs" / case
        _assert_trained_alike(
            _weights(f"{prefix}-mirrored-final.npz"),
            _weights(f"{prefix}-default-final.npz"),
            _weights(f"{prefix}-default-initial.npz"),
            f"normalize={normalize}, accumulate={accumulate}",
        )
        # Both runs started from the same weights (same seed, whatever the strategy).
        _assert_equal(
            _weights(f"{prefix}-mirrored-initial.npz"), _weights(f"{prefix}-default-initial.npz")
        )


def test_mirrored_strategy_matches_default_strategy(tmp_path):
    """Two replicas of one pipeline train the same weights as one device on the same batches.

    Images carry different numbers of ignore pixels, so "valid" is right only if the replicas
    divide by the global valid-pixel count; augmentation is on, and is the same in both runs
    because the replicas' batches are consecutive slices of one seeded stream.
    """
    # "batch" divides the summed loss by the global batch: a smaller rate for a similar step.
    cases = [["valid", 0.1, 1], ["batch", 1e-4, 1]]
    _assert_mirrored_matches_default(tmp_path, _mirrored_records(tmp_path), cases)


def test_mirrored_strategy_accumulates_as_the_default_strategy(tmp_path):
    """Two micro-batches per update: the replicas' update (an all-reduce, which Keras' own
    accumulation cannot do inside its cond under MirroredStrategy) is the single device's,
    each micro-batch divided by its own global valid-pixel count."""
    cases = [["valid", 0.1, 2]]
    _assert_mirrored_matches_default(tmp_path, _mirrored_records(tmp_path), cases)


_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os
    import numpy as np
    from fcn_tf.training.config import from_dict
    from fcn_tf.training.loop import Trainer
    RECORDING

    args = json.loads(os.environ["FCN_TEST_ARGS"])
    trainer = Recording(from_dict(args["config"]), args["run"], verbose=0)
    result = trainer.fit()
    np.savez(args["weights"] + "-initial.npz", **trainer.initial)
    np.savez(args["weights"] + "-final.npz", **{w.path: w.numpy() for w in trainer.model.weights})
    print("RESULT" + json.dumps({"step": result["step"], "chief": trainer.chief,
                                 "checkpoint": result["files"]["checkpoint"]}))
    """
).replace("RECORDING", _RECORDING)


def _layout(folder) -> list[str]:
    """The files under ``folder``, TensorBoard logs (named by host and time) as one name."""
    files = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.startswith("events.out.tfevents"):
                name = "events"
            files.append(os.path.relpath(os.path.join(parent, name), folder))
    return sorted(files)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_together(jobs: dict[str, dict], folder, timeout: float) -> dict[str, dict]:
    """Run the worker script once per job, all at once; kill them all on failure or timeout.

    Returns each job's RESULT; a failure names every job's exit code and stderr tail.
    """
    processes, logs = {}, {}
    base = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
    }
    base.pop("TF_CONFIG", None)

    def report() -> str:
        lines = []
        for name, process in processes.items():
            stderr = (folder / f"{name}.err").read_text()[-2000:]
            lines.append(f"--- {name} (exit {process.returncode}):\n{stderr}")
        return "\n".join(lines)

    try:
        for name, job in jobs.items():
            env = {**base, "FCN_TEST_ARGS": json.dumps(job["args"]), **job.get("env", {})}
            logs[name] = (open(folder / f"{name}.out", "w"), open(folder / f"{name}.err", "w"))
            processes[name] = subprocess.Popen(
                [sys.executable, "-c", _WORKER_SCRIPT],
                env=env,
                stdout=logs[name][0],
                stderr=logs[name][1],
            )
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in processes.values()):
            failed = any(p.returncode not in (None, 0) for p in processes.values())
            # A dead worker leaves its peer waiting on a collective forever: stop early.
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        for files in logs.values():
            for file in files:
                file.close()
    assert all(p.returncode == 0 for p in processes.values()), report()
    results = {}
    for name in jobs:
        stdout = (folder / f"{name}.out").read_text()
        line = next((s for s in stdout.splitlines() if s.startswith("RESULT")), None)
        assert line is not None, report()
        results[name] = json.loads(line[len("RESULT") :])
    return results


def test_multi_worker_matches_single_process(tmp_path):
    """Two workers (one image each per update) train what one process does on both images.

    Without shuffling or augmentation, worker p's stream is file p in order, and the
    reference's one file interleaves the two, so each global batch holds the same images.
    The files differ in ignore pixels, so "valid" needs the cross-worker all-reduce.
    """
    data = tmp_path / "data"
    data.mkdir()
    size = 32
    shards = [
        _write_records(data / f"train-{p}.tfrecord", p, STEPS, size, ignored)
        for p, ignored in enumerate([[0, 3, 9], [20, 14, 25]])
    ]
    with tf.io.TFRecordWriter(str(data / "reference.tfrecord")) as writer:
        for pair in zip(*shards, strict=True):
            for sample in pair:
                writer.write(encode_example(sample, size, size))
    still = {"mirror": False, "scale_range": None, "jitter": 0.0, "shuffle_buffer": 1}
    worker_config = _config(str(data / "train-*.tfrecord"), 2, size, **still)
    worker_config["run"]["strategy"] = "multi_worker"
    reference_config = _config(str(data / "reference.tfrecord"), 2, size, **still)

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run = tmp_path / "run"
    jobs = {
        f"worker{index}": {
            "args": {
                "config": worker_config,
                "run": str(run),
                "weights": str(tmp_path / f"worker{index}"),
            },
            "env": {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                )
            },
        }
        for index in range(2)
    }
    jobs["reference"] = {
        "args": {
            "config": reference_config,
            "run": str(tmp_path / "reference"),
            "weights": str(tmp_path / "reference"),
        }
    }
    results = _run_together(jobs, tmp_path, TIMEOUT)

    assert [results[name]["step"] for name in jobs] == [STEPS] * 3
    assert results["worker0"]["chief"] and not results["worker1"]["chief"]
    reference = _weights(tmp_path / "reference-final.npz")
    initial = _weights(tmp_path / "reference-initial.npz")
    for index in range(2):
        _assert_equal(_weights(tmp_path / f"worker{index}-initial.npz"), initial)
        final = _weights(tmp_path / f"worker{index}-final.npz")
        _assert_trained_alike(final, reference, initial, f"worker {index}")

    # What the chief saved is what it trained.
    checkpoint = results["worker0"]["checkpoint"]
    assert checkpoint.startswith(str(run / "checkpoints")), checkpoint
    model = build_model(from_dict(reference_config), NUM_CLASSES)
    status = tf.train.Checkpoint(model=model).restore(checkpoint)
    status.assert_existing_objects_matched().expect_partial()
    restored = {w.path: w.numpy() for w in model.weights}
    _assert_trained_alike(restored, reference, initial, "chief's checkpoint")

    # The non-chief kept its files apart (workers/) and deleted them: the run folder holds
    # what a single process writes, and nothing of the other worker.
    assert _layout(run) == _layout(tmp_path / "reference")
