"""The models a server serves, their loaded versions, and the watcher that loads new ones.

Each model's base path is scanned for version folders (decimal names only, as TF Serving
does, so an exporter's hidden temporary folder is never looked at). The version policy
(``latest`` N, the default 1; ``all``; ``specific``) picks which to serve; a version is loaded
completely, warm-up call included, before one reference swap publishes the new set, so
requests see the old set or the new one and never wait for a load. A version that fails to
load is logged and skipped (until its ``saved_model.pb`` changes): the versions served
before stay. Requests already running on an unloaded version finish on it.

>>> import tempfile
>>> from fcn_tf.serving.config import model_configs, single_model_config
>>> registry = ModelRegistry(model_configs(single_model_config("fcn", tempfile.mkdtemp())))
>>> registry.refresh()
>>> registry.model("fcn").status()
[]
>>> registry.resolve("fcn", None, "")
Traceback (most recent call last):
...
fcn_tf.serving.errors.ServingError: NOT_FOUND: model 'fcn' has no version loaded yet ...
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence

import grpc
from tensorflow_serving.config import model_server_config_pb2

from fcn_tf.export.versions import version_folders
from fcn_tf.serving.errors import ServingError, not_found
from fcn_tf.serving.servable import Servable, load_version

__all__ = ["ModelRegistry", "ServedModel", "Watcher"]

log = logging.getLogger(__name__)


class ServedModel:
    """One model of the config: its loaded versions (an immutable mapping, swapped whole).

    >>> config = model_server_config_pb2.ModelConfig(
    ...     name="fcn", base_path="/models/fcn", version_labels={"stable": 3})
    >>> ServedModel(config).resolve(None, "stable")  # the label names version 3
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: NOT_FOUND: version 3 of model 'fcn' is not loaded; ...
    """

    def __init__(self, config: model_server_config_pb2.ModelConfig, warmup: bool = True) -> None:
        self.config = config
        self.name = config.name
        self.warmup = warmup
        self._servables: Mapping[int, Servable] = {}
        self._failed: dict[int, tuple[tuple, str]] = {}  # version -> (fingerprint, error)
        self._folders: dict[int, str] = {}  # version -> its folder's name ("7" or "007")
        self._refresh_lock = threading.Lock()
        self._reported_empty = False

    @property
    def servables(self) -> Mapping[int, Servable]:
        """The versions loaded now (a snapshot: later swaps do not change it)."""
        return self._servables

    def _report_empty(self, on_disk: Sequence[int]) -> None:
        # Said once until versions appear, as TF Serving does, so a typo in a base path is
        # not a server that quietly serves nothing.
        if on_disk:
            self._reported_empty = False
        elif not self._reported_empty:
            self._reported_empty = True
            what = "does not exist" if not os.path.isdir(self.config.base_path) else "is empty"
            log.warning(
                "model %r: base path %s %s (no numbered version folder to serve)",
                self.name,
                self.config.base_path,
                what,
            )

    def _wanted(self, on_disk: Sequence[int]) -> list[int]:
        """The versions the policy serves, newest first, among those that loaded or may."""
        policy = self.config.model_version_policy
        loadable = [v for v in sorted(on_disk, reverse=True) if not self._failed_still(v)]
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            return loadable
        if choice == "specific":
            return [v for v in loadable if v in set(policy.specific.versions)]
        count = policy.latest.num_versions if choice == "latest" else 1
        return loadable[: max(1, count)]

    def _failed_still(self, version: int) -> bool:
        failure = self._failed.get(version)
        return failure is not None and failure[0] == self._fingerprint(version)

    def _fingerprint(self, version: int) -> tuple:
        """Every file of the version folder with its size and mtime: a failed load is retried
        once anything in it changes (a copy that was still in progress, a rewrite)."""
        files = []
        for folder, _, names in os.walk(self._path(version)):
            for name in names:
                try:
                    info = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                files.append((os.path.join(folder, name), info.st_size, info.st_mtime_ns))
        return tuple(sorted(files))

    def _path(self, version: int) -> str:
        return os.path.join(self.config.base_path, self._folders.get(version, str(version)))

    def refresh(self) -> None:
        """Load the versions the policy wants that are not loaded, then swap them in."""
        with self._refresh_lock:
            current = self._servables
            while True:
                self._folders = version_folders(self.config.base_path)
                on_disk = sorted(self._folders)
                self._report_empty(on_disk)
                for gone in set(self._failed) - set(on_disk):
                    del self._failed[gone]
                wanted = self._wanted(on_disk)
                missing = [v for v in wanted if v not in current]
                if not missing:
                    break
                # One at a time, newest first: a failure changes what "latest N" means.
                loaded = self._load(missing[0])
                if loaded is not None:
                    current = {**current, loaded.version: loaded}
            servables = {v: current[v] for v in wanted}
            if servables.keys() != self._servables.keys():
                log.info("model %s: serving versions %s", self.name, sorted(servables))
            self._servables = servables

    def _load(self, version: int) -> Servable | None:
        path = self._path(version)
        # Taken before loading: a copy that goes on during the attempt changes it again.
        fingerprint = self._fingerprint(version)
        try:
            servable = load_version(path, version, warmup=self.warmup)
        except Exception as error:  # any broken SavedModel: keep serving what was there
            self._failed[version] = (fingerprint, f"{type(error).__name__}: {error}")
            log.error(
                "model %s: version %d at %s failed to load: %s", self.name, version, path, error
            )
            return None
        self._failed.pop(version, None)
        log.info("model %s: loaded version %d from %s", self.name, version, path)
        return servable

    def resolve(self, version: int | None, label: str = "") -> Servable:
        """The version asked for: a number, a label of the config, or the newest loaded."""
        servables = self._servables
        if label:
            labels = self.config.version_labels
            if label not in labels:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unrecognized version label '{label}' of model '{self.name}'; "
                    f"labels: {dict(labels)}",
                )
            version = labels[label]
        if version is None:
            if not servables:
                raise not_found(
                    f"model '{self.name}' has no version loaded yet (base path "
                    f"{self.config.base_path})"
                )
            return servables[max(servables)]
        if version not in servables:
            raise not_found(
                f"version {version} of model '{self.name}' is not loaded; loaded: "
                f"{sorted(servables)}"
            )
        return servables[version]

    def status(self) -> list[dict]:
        """Per version, newest first: ``version``, ``state`` (TF Serving's names) and an
        ``error`` message for versions that failed to load."""
        rows = [{"version": v, "state": "AVAILABLE", "error": ""} for v in self._servables]
        rows += [
            {"version": v, "state": "END", "error": error}
            for v, (_, error) in dict(self._failed).items()
            if v not in self._servables
        ]
        return sorted(rows, key=lambda row: -row["version"])


class ModelRegistry:
    """The served models by name.

    >>> config = model_server_config_pb2.ModelConfig(name="fcn", base_path="/models/fcn")
    >>> registry = ModelRegistry([config])
    >>> registry.model("fcn").name
    'fcn'
    >>> registry.model("seg")
    Traceback (most recent call last):
    ...
    fcn_tf.serving.errors.ServingError: NOT_FOUND: model 'seg' is not served here; models: ['fcn']
    """

    def __init__(
        self, configs: Sequence[model_server_config_pb2.ModelConfig], warmup: bool = True
    ) -> None:
        self.models = {config.name: ServedModel(config, warmup) for config in configs}

    def model(self, name: str) -> ServedModel:
        """The model called ``name``; NOT_FOUND naming the served ones otherwise."""
        if name not in self.models:
            raise not_found(f"model '{name}' is not served here; models: {sorted(self.models)}")
        return self.models[name]

    def resolve(self, name: str, version: int | None, label: str = "") -> Servable:
        """The loaded version a request names (by number, label, or the newest)."""
        return self.model(name).resolve(version, label)

    def refresh(self) -> None:
        """Scan every model's base path once (see :meth:`ServedModel.refresh`)."""
        for model in self.models.values():
            model.refresh()


class Watcher:
    """A daemon thread that refreshes ``registry`` every ``poll_seconds`` until stopped.

    >>> watcher = Watcher(ModelRegistry([]), poll_seconds=0.05).start()
    >>> watcher.stop()
    """

    def __init__(self, registry: ModelRegistry, poll_seconds: float = 1.0) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.registry.refresh()
            except Exception:  # a scan error (a base path unmounted) must not stop watching
                log.exception("model refresh failed")

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the refresh in progress (a load can take seconds: ``timeout`` bounds the
        wait)."""
        self._stop.set()
        if self._thread.is_alive():  # a server that failed to start never started it
            self._thread.join(timeout)
