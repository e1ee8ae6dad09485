"""``tf.distribute`` strategies by name, as the trainer's ``--strategy`` takes them.

>>> make_strategy("default").num_replicas_in_sync
1
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

__all__ = ["is_chief", "make_strategy", "worker_index"]


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """``default``, ``one_device`` (the first GPU, else the CPU), ``mirrored`` (all local
    GPUs, else the CPU devices), ``multi_worker`` (``TF_CONFIG`` names the cluster) or
    ``tpu`` (``tpu``: a TPU name or address; ``None`` asks the environment).

    >>> make_strategy("one_device").num_replicas_in_sync
    1
    >>> make_strategy("horovod")
    Traceback (most recent call last):
    ...
    ValueError: unknown strategy 'horovod'
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy multi_worker needs TF_CONFIG naming the cluster and this worker, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except Exception as error:  # the resolver's failures vary (ValueError, URLError...)
            where = f"--tpu {tpu}" if tpu else "no --tpu given"
            raise ValueError(
                f"--strategy tpu: no TPU found ({where}: {error}); pass --tpu NAME"
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}")


def worker_index() -> int:
    """This process' worker index in ``TF_CONFIG`` (0 without one).

    >>> os.environ.get("TF_CONFIG") is None and worker_index()
    0
    """
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return int(task.get("index", 0))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (worker 0, or the only process).

    >>> is_chief(tf.distribute.get_strategy())
    True
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0
