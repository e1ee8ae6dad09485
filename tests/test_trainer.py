"""The trainer: recipes, exact resume after SIGKILL, non-finite loss, staged init, numerics."""

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import TINY_VGG
from helpers import REPO_ROOT

from fcn_tf.export import read_metadata
from fcn_tf.losses import SegmentationCrossEntropy
from fcn_tf.training import config as recipes
from fcn_tf.training import loop, runs
from fcn_tf.training.inputs import resolve_split, train_dataset_fn
from fcn_tf.training.loop import NonFiniteLossError, Trainer, build_model, load_model
from fcn_tf.training.solver import make_optimizer

RECIPES = sorted((REPO_ROOT / "training" / "configs").glob("*.yaml"))


def tiny_config(records_dir, **sections) -> recipes.TrainConfig:
    """A seconds-long recipe on 16 shapes images of 32x32."""
    values = {
        "model": {"geometry": "same", "backbone_options": dict(TINY_VGG)},
        "data": {
            "options": {"height": 32, "width": 32},
            "split_options": {"train": {"count": 16}, "val": {"count": 4}},
            "records_dir": str(records_dir),
            "batch_size": 2,
            "crop_size": 32,
            "scale_range": [0.75, 1.25],
        },
        "solver": {"optimizer": "sgd", "learning_rate": 0.01, "accumulate": 1},
        "run": {"steps_per_epoch": 3, "epochs": 1, "export": False, "eval_images": 1},
    }
    for section, fields in sections.items():
        values[section] = {**values.get(section, {}), **fields}
    return recipes.from_dict(values)


def weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.weights]


# -- recipes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_parses(path):
    config = recipes.load_recipe(path)
    assert config.name == path.stem
    round_trip = recipes.from_dict(recipes.to_dict(config))
    assert round_trip == config


def test_recipe_errors_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  outptu_stride: 16\n")
    with pytest.raises(ValueError, match=r"bad.yaml: model: unknown key\(s\) \['outptu_stride'\]"):
        recipes.load_recipe(path)
    with pytest.raises(ValueError, match=r"run\.precision must be one of"):
        recipes.from_dict({"run": {"precision": "float8"}})
    with pytest.raises(ValueError, match=r"unknown key 'run\.epoch'"):
        recipes.override(recipes.TrainConfig(), ["run.epoch=3"])


def test_jit_with_op_determinism_is_refused_up_front(tmp_path):
    config = tiny_config(tmp_path / "records", run={"jit": True, "deterministic": True})
    trainer = Trainer(config, str(tmp_path / "run"), verbose=0)
    with pytest.raises(ValueError, match=r"run\.jit and run\.deterministic .*pool1"):
        trainer.build(6, 3)


def test_overrides_parse_yaml_values():
    config = recipes.override(
        recipes.TrainConfig(),
        ["data.scale_range=[0.5, 2.0]", "model.geometry=null", "run.jit=true", "solver.power=1"],
    )
    assert config.data.scale_range == [0.5, 2.0]
    assert config.model.geometry is None and config.run.jit is True
    assert config.solver.power == 1


def test_numbers_in_e_notation_are_floats_in_recipes_and_overrides(tmp_path):
    # PyYAML alone reads 1e-4 (no dot) as a string, which reached the optimizer as one.
    path = tmp_path / "recipe.yaml"
    path.write_text("solver: {optimizer: adamw, learning_rate: 1e-3, weight_decay: 5E-4}\n")
    config = recipes.load_recipe(path)
    assert config.solver.learning_rate == 0.001 and config.solver.weight_decay == 0.0005
    config = recipes.override(config, ["solver.loss_sampling=5e-1", "solver.momentum=0"])
    assert config.solver.loss_sampling == 0.5
    assert type(config.solver.momentum) is float and config.solver.momentum == 0.0
    written = tmp_path / "written.yaml"
    written.write_text(yaml.safe_dump(recipes.to_dict(config)))
    assert recipes.load_recipe(written).solver == config.solver


def test_values_of_the_wrong_type_are_refused_naming_the_field():
    cases = {
        "run.epochs=2.5": r"run\.epochs must be int, got 2\.5",
        "solver.learning_rate=fast": r"solver\.learning_rate must be float \| None, got 'fast'",
        "data.crop_size=None": r"data\.crop_size must be .*got 'None' \(write null for none\)",
        "run.jit=1": r"run\.jit must be bool, got 1",
        "run.jit=null": r"run\.jit must be bool, got None$",  # no hint to write what was written
        "data.train=*.tfrecord": r"override 'data\.train=\*\.tfrecord': .*not valid YAML.*quote",
    }
    for assignment, message in cases.items():
        with pytest.raises(ValueError, match=message):
            recipes.override(recipes.TrainConfig(), [assignment])
    assert recipes.override(recipes.TrainConfig(), ["data.crop_size=null"]).data.crop_size is None


def test_overrides_may_add_keys_inside_mapping_fields():
    config = recipes.override(
        recipes.load_recipe(REPO_ROOT / "training" / "configs" / "camvid_fcn8s.yaml"),
        ["model.backbone_options.dropout=0.5", "data.split_options.test.count=4"],
    )
    assert config.model.backbone_options["dropout"] == 0.5
    assert config.model.backbone_options["width"] == 0.25  # the rest kept
    assert config.data.split_options["test"] == {"count": 4}
    with pytest.raises(ValueError, match=r"unknown key 'run\.epoch'"):
        recipes.override(config, ["run.epoch=3"])


# -- the run folder ---------------------------------------------------------------------------


def test_run_folder_holds_config_metrics_and_best(tmp_path):
    config = tiny_config(tmp_path / "records", run={"epochs": 2, "export": True})
    run_dir = tmp_path / "run"
    result = Trainer(config, str(run_dir), verbose=0).fit()

    written = recipes.from_dict(runs.read_config(str(run_dir)))
    assert written.data.num_classes == 6 and written.model == config.model
    metadata = json.loads((run_dir / runs.METADATA).read_text())
    assert metadata["versions"]["tensorflow"] == tf.__version__
    lines = [json.loads(line) for line in (run_dir / runs.METRICS).read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 6]
    assert set(lines[0]["val"]["per_class_iu"]) == {
        "background", "disc", "rectangle", "triangle", "ring", "bar"
    }  # fmt: skip
    best = max(line["val"]["mean_iu"] for line in lines)
    assert result["best_mean_iu"] == pytest.approx(best)
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith("ckpt-6")
    assert os.listdir(run_dir / "tensorboard")

    # The exported model is the best checkpoint's, and scores what metrics.jsonl says.
    exported = keras.models.load_model(result["files"]["model"])
    best_model = build_model(config, 6)
    tf.train.Checkpoint(model=best_model).restore(result["files"]["best"]).expect_partial()
    for mine, theirs in zip(exported.weights, best_model.weights, strict=True):
        np.testing.assert_array_equal(np.array(mine), np.array(theirs))

    # ... and so is the SavedModel, in TF Serving's layout, with the run's class names.
    assert result["files"]["saved_model"] == str(run_dir / runs.EXPORT / "1")
    served = tf.saved_model.load(result["files"]["saved_model"]).signatures["serving_default"]
    image = np.random.default_rng(0).integers(0, 256, (1, 32, 40, 3), dtype=np.uint8)
    expected = np.argmax(exported(image.astype("float32")), axis=-1)
    np.testing.assert_array_equal(served(images=tf.constant(image))["class_ids"], expected)
    described = read_metadata(result["files"]["saved_model"])
    assert described["class_names"] == list(lines[0]["val"]["per_class_iu"])


def test_an_existing_run_is_never_overwritten_without_resume(tmp_path):
    config = tiny_config(tmp_path / "records")
    run_dir = tmp_path / "run"
    Trainer(config, str(run_dir), verbose=0).fit()
    before = {name: (run_dir / name).read_bytes() for name in (runs.CONFIG, runs.METRICS)}
    with pytest.raises(FileExistsError, match=rf"{run_dir} already holds a run.*--resume"):
        Trainer(config, str(run_dir), verbose=0).fit()
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_a_rendered_split_is_reused_whatever_the_workers_and_redone_for_other_options(tmp_path):
    def folder(**options):
        config = tiny_config(tmp_path / "records", data={"options": {"height": 32, **options}})
        return os.path.dirname(resolve_split(config.data, "val", verbose=False).files[0])

    one = folder(width=32)
    stamp = os.stat(os.path.join(one, "dataset.json")).st_mtime_ns
    assert folder(width=32, workers=2) == one
    assert os.stat(os.path.join(one, "dataset.json")).st_mtime_ns == stamp
    assert folder(width=24) != one
    assert len(os.listdir(tmp_path / "records")) == 2


def test_classes_that_disagree_are_refused_before_training(tmp_path):
    config = tiny_config(tmp_path / "records", data={"num_classes": 7})
    with pytest.raises(ValueError, match=r"data\.num_classes is 7 but .* name 6 classes"):
        Trainer(config, str(tmp_path / "a"), verbose=0).fit()
    assert not (tmp_path / "a" / runs.CHECKPOINTS).exists()

    # Own training records: the recipe's (shapes) validation is not used in their place...
    train = resolve_split(tiny_config(tmp_path / "records").data, "train", verbose=False)
    folder = tmp_path / "mine"
    shutil.copytree(os.path.dirname(train.files[0]), folder)
    metadata = {**train.metadata, "class_names": ["bg", "a", "b", "c", "d", "e"]}
    (folder / "dataset.json").write_text(json.dumps(metadata))
    mine = tiny_config(tmp_path / "records", data={"train": str(folder / "*.tfrecord")})
    with pytest.warns(UserWarning, match="data.val is not set: no validation"):
        assert resolve_split(mine.data, "val", verbose=False) is None
    # ... and validation records naming other classes are refused before training.
    val = resolve_split(tiny_config(tmp_path / "records").data, "val", verbose=False)
    both = tiny_config(tmp_path / "records", data={"train": str(folder), "val": val.files[0]})
    with pytest.raises(
        ValueError, match=r"validation records in .* name the classes \['background'"
    ):
        Trainer(both, str(tmp_path / "b"), verbose=0).fit()


def test_resume_of_a_staged_run_without_checkpoint_starts_from_the_coarser_net(
    tmp_path, monkeypatch
):
    base = {"geometry": "caffe", "backbone_options": dict(TINY_VGG)}
    coarse = tiny_config(tmp_path / "records", model={**base, "output_stride": 32})
    Trainer(coarse, str(tmp_path / "fcn32s"), verbose=0).fit()
    fine = tiny_config(tmp_path / "records", model={**base, "output_stride": 16})
    run_dir = tmp_path / "fcn16s"
    # Stopped after writing its folder, before any checkpoint.
    runs.write_config(str(run_dir), recipes.to_dict(fine), {"init_from": str(tmp_path / "fcn32s")})

    started_from = []
    monkeypatch.setattr(Trainer, "_initialise_from", lambda self, path: started_from.append(path))
    Trainer(fine, str(run_dir), verbose=0).fit(resume=True)
    assert started_from == [str(tmp_path / "fcn32s")]
    metadata = runs.read_metadata(str(run_dir))
    assert metadata["init_from"] == str(tmp_path / "fcn32s")  # the first start's, kept
    assert len(metadata["resumes"]) == 1 and "commit" in metadata["resumes"][0]


def test_checkpoints_load_without_the_imagenet_file_the_run_started_from(tmp_path, rng):
    config = tiny_config(tmp_path / "records")
    run_dir = tmp_path / "run"
    trainer = Trainer(config, str(run_dir), verbose=0)
    trainer.fit()
    values = runs.read_config(str(run_dir))
    values["model"]["backbone_weights"] = str(tmp_path / "moved_away.h5")
    runs.write_config(str(run_dir), values, runs.read_metadata(str(run_dir)))

    image = rng.uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.array(load_model(str(run_dir / runs.CHECKPOINTS))(image)), np.array(trainer.model(image))
    )
    config = recipes.from_dict(values)
    config.run.epochs = 2
    assert Trainer(config, str(run_dir), verbose=0).fit(resume=True)["step"] == 6


def test_resume_refuses_what_would_move_the_input_and_a_finished_run_is_left_as_is(
    tmp_path, capsys
):
    config = tiny_config(tmp_path / "records", run={"export": True})
    run_dir = tmp_path / "run"
    Trainer(config, str(run_dir), verbose=0).fit()
    for line in (run_dir / runs.METRICS).read_text().splitlines():  # strict JSON: no NaN
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))
    finished = (run_dir / runs.MODEL).stat().st_mtime_ns
    result = Trainer(config, str(run_dir), verbose=0).fit(resume=True)
    assert "already finished at update 3 of 3" in capsys.readouterr().out
    assert os.listdir(run_dir / runs.EXPORT) == ["1"]  # no second, identical version
    assert result["files"]["saved_model"] == str(run_dir / runs.EXPORT / "1")
    assert (run_dir / runs.MODEL).stat().st_mtime_ns == finished

    longer = recipes.override(config, ["run.epochs=2", "data.batch_size=4"])
    with pytest.raises(ValueError, match=r"data\.batch_size was 2 and is now 4"):
        Trainer(longer, str(run_dir), verbose=0).fit(resume=True)
    # null accumulation takes the preset's: normalized accumulates 20 micro-batches.
    longer = recipes.override(config, ["run.epochs=2", "solver.accumulate=null"])
    with pytest.raises(ValueError, match=r"solver\.accumulate was 1 and is now 20"):
        Trainer(longer, str(run_dir), verbose=0).fit(resume=True)
    # The seed, the shuffle buffer and the records fix the stream's order.
    for assignment, field in [
        ("run.seed=7", "run.seed"),
        ("data.shuffle_buffer=1", "data.shuffle_buffer"),
        (f"data.train={tmp_path / 'other'}/*.tfrecord", "data.train"),
    ]:
        longer = recipes.override(config, ["run.epochs=2", assignment])
        with pytest.raises(ValueError, match=rf"{field} was .* and is now"):
            Trainer(longer, str(run_dir), verbose=0).fit(resume=True)
    longer = recipes.override(config, ["run.epochs=2"])
    with pytest.raises(ValueError, match=r"--init-from .* resumes from its checkpoint"):
        Trainer(longer, str(run_dir), init_from=str(run_dir), verbose=0).fit(resume=True)


def test_unusable_solver_and_run_fields_are_named():
    for assignment, message in {
        "solver.schedule=bogus": r"solver\.schedule must be one of",
        "solver.normalize=mean": r"solver\.normalize must be one of",
        "run.keep_checkpoints=0": r"run\.keep_checkpoints must be a positive integer",
        "solver.accumulate=0": r"solver\.accumulate must be a positive integer",
        "solver.learning_rate=-0.01": r"solver\.learning_rate must be positive, got -0\.01",
        "solver.momentum=1.0": r"solver\.momentum must be in \[0, 1\), got 1\.0",
        "solver.weight_decay=-1e-4": r"solver\.weight_decay must be >= 0",
        "solver.schedule=step": r"solver\.step_size must be a positive integer with schedule",
        "solver.optimizer=adam": r"solver\.learning_rate is needed with solver\.optimizer 'adam'",
    }.items():
        with pytest.raises(ValueError, match=message):
            recipes.override(recipes.TrainConfig(), [assignment])


def test_adam_takes_its_own_rate_and_no_preset_accumulation():
    from fcn_tf.training.loop import solver_config

    config = recipes.from_dict({"solver": {"optimizer": "adam", "learning_rate": 1e-3}})
    solver = solver_config(config, total_steps=10)
    assert (solver.learning_rate, solver.accumulate) == (1e-3, 1)  # not 1e-8 and 20
    sgd = solver_config(recipes.from_dict({}), total_steps=10)
    assert (sgd.learning_rate, sgd.accumulate) == (1e-8, 20)  # the normalized FCN-8s preset


@pytest.mark.parametrize(
    ("model", "start"),
    [({"output_stride": 8}, r"an FCN-16s \(--init-from\)"),
     ({"output_stride": 32}, r"ImageNet VGG16 \(--backbone-weights\)")],
)  # fmt: skip
def test_a_preset_rate_from_random_weights_warns(tmp_path, model, start):
    config = tiny_config(
        tmp_path / "records", model=model, solver={"learning_rate": None, "accumulate": 1}
    )
    trainer = Trainer(config, str(tmp_path / "run"), verbose=0)
    with pytest.warns(
        UserWarning, match=rf"trains at [0-9.e-]+, a rate for fine-tuning from {start}"
    ):
        trainer._setup(resume=False)
    given = tiny_config(tmp_path / "records", model=model)  # its own rate: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(given, str(tmp_path / "run2"), verbose=0)._setup(resume=False)


# -- exact resume -----------------------------------------------------------------------------

RESUME_SCRIPT = """
import json, os, signal, sys
import numpy as np
from fcn_tf.export import read_metadata
from fcn_tf.training import config as recipes
from fcn_tf.training.loop import Trainer

config = recipes.from_dict(json.loads(sys.argv[1]))
run_dir, mode = sys.argv[2], sys.argv[3]
if mode == "kill":
    make_step = Trainer.train_step_fn

    def dying_step_fn(self):
        step = make_step(self)
        calls = [0]

        def counted(iterator):
            calls[0] += 1
            if calls[0] == int(sys.argv[4]):
                os.kill(os.getpid(), signal.SIGKILL)
            return step(iterator)

        return counted

    Trainer.train_step_fn = dying_step_fn
trainer = Trainer(config, run_dir, verbose=0)
result = trainer.fit(resume=(mode == "resume"))
np.savez(os.path.join(run_dir, "weights.npz"), *[np.array(w) for w in trainer.model.weights])
print("RESULT" + json.dumps({"step": result["step"]}))
"""


def _train_process(config, run_dir, mode, *extra):
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    arguments = [json.dumps(recipes.to_dict(config)), str(run_dir), mode, *map(str, extra)]
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RESUME_SCRIPT), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _saved_weights(run_dir):
    with np.load(run_dir / "weights.npz") as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    # Dropout on, augmentation on, checkpoints every 3 updates; the kill comes at update 8,
    # mid-epoch 2 and two updates past the last checkpoint, which the resumed run redoes.
    backbone = {**TINY_VGG, "dropout": 0.5}
    config = tiny_config(
        tmp_path / "records",
        model={"backbone_options": backbone},
        solver={"optimizer": "adam", "learning_rate": 1e-3, "schedule": "poly"},
        run={"steps_per_epoch": 5, "epochs": 2, "checkpoint_every": 3, "deterministic": True},
        data={"mirror": True, "jitter": 0.5},
    )
    whole = _train_process(config, tmp_path / "whole", "plain")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = _train_process(config, tmp_path / "killed", "kill", 8)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert runs.latest_checkpoint(str(tmp_path / "killed")).endswith("ckpt-6")
    assert not (tmp_path / "killed" / "weights.npz").exists()

    resumed = _train_process(config, tmp_path / "killed", "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert '"step": 10' in resumed.stdout

    initial = weights_of(build_model(config, 6))
    final, expected = _saved_weights(tmp_path / "killed"), _saved_weights(tmp_path / "whole")
    assert any(not np.allclose(a, b) for a, b in zip(final, initial, strict=False))
    for got, want in zip(final, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    lines = (tmp_path / "killed" / runs.METRICS).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10]


# -- failures ---------------------------------------------------------------------------------


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(
        tmp_path / "records",
        solver={"learning_rate": 1e12, "momentum": 0.9, "normalize": "none"},
        run={"steps_per_epoch": 20, "checkpoint_every": 1},
    )
    trainer = Trainer(config, str(tmp_path / "run"), verbose=0)
    with pytest.raises(NonFiniteLossError, match=r"at step \d+") as raised:
        trainer.fit()
    message = raised.value.args[0]
    failed = int(message.split("at step ")[1].split(" ")[0].rstrip(";"))
    latest = runs.latest_checkpoint(str(tmp_path / "run"))
    assert latest.endswith(f"ckpt-{failed - 1}") and message.endswith(latest)
    model = build_model(config, 6)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    assert all(np.isfinite(w).all() for w in weights_of(model))


# -- staged training --------------------------------------------------------------------------


def test_staged_init_carries_the_coarser_net_and_starts_new_skips_at_zero(tmp_path, rng):
    base = {"geometry": "caffe", "backbone_options": dict(TINY_VGG)}
    coarse = tiny_config(tmp_path / "records", model={**base, "output_stride": 32})
    Trainer(coarse, str(tmp_path / "fcn32s"), verbose=0).fit()

    fine = tiny_config(tmp_path / "records", model={**base, "output_stride": 16})
    trainer = Trainer(fine, str(tmp_path / "fcn16s"), init_from=str(tmp_path / "fcn32s"))
    trainer._setup(resume=False)
    source = build_model(coarse, 6)
    tf.train.Checkpoint(model=source).restore(runs.find_checkpoint(str(tmp_path / "fcn32s")))
    for name in ("conv1_1", "conv5_3", "fc6", "fc7", "score_fr"):
        for mine, theirs in zip(
            trainer.model.get_layer(name).weights, source.get_layer(name).weights, strict=True
        ):
            np.testing.assert_array_equal(np.array(mine), np.array(theirs))
    assert not np.any(trainer.model.get_layer("score_pool4").get_weights()[0])

    # A zero skip adds nothing, and 2x then 16x bilinear upsampling differs from 32x bilinear
    # upsampling only where the 2x step cuts the corners at cell centres: FCN-16s starts
    # where FCN-32s ended, to a fraction of a percent (away from the borders, whose cells the
    # two nets crop differently).
    image = rng.uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    coarse_out, fine_out = np.array(source(image)), np.array(trainer.model(image))
    scale = float(np.abs(coarse_out).max())
    assert scale > 0
    interior = np.s_[:, 32:64, 32:64]
    assert np.abs(fine_out[interior] - coarse_out[interior]).max() < 0.005 * scale


# -- gradient accumulation --------------------------------------------------------------------

NUM_CLASSES = 6


def _accumulating_config(batch_size, accumulate, **fields):
    # Dropout off: a batch of 2b and two of b would draw different masks. No BN in TINY_VGG.
    run = {key: fields.pop(key) for key in ("precision", "jit") if key in fields}
    return tiny_config(
        "unused",
        model={"backbone_options": {**TINY_VGG, "dropout": 0.0}},
        data={"batch_size": batch_size, "num_classes": NUM_CLASSES},
        solver={"learning_rate": 0.05, "accumulate": accumulate, **fields},
        run=run,
    )


def _examples(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Random 32x32 images and labels, image i with its own number of ignored rows."""
    images = rng.uniform(0, 255, (count, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (count, 32, 32)).astype("int32")
    for index, rows in enumerate(rng.permutation(count) * 3):
        labels[index, :rows] = 255
    return images, labels


def _train_directly(config, run_dir, images, labels, updates: int) -> Trainer:
    """``updates`` updates of the trainer's own model, optimizer and step (as the benchmarks
    drive them) on the examples in order; the initial weights kept as ``initial``."""
    trainer = Trainer(config, str(run_dir), verbose=0)
    previous = keras.mixed_precision.global_policy()
    # As Trainer._setup: the seed, then the policy, then the model and optimizer.
    keras.utils.set_random_seed(config.run.seed)
    keras.mixed_precision.set_global_policy(config.run.precision)
    try:
        trainer.build(NUM_CLASSES, total_steps=updates)
        trainer.initial = weights_of(trainer.model)
        batches = tf.data.Dataset.from_tensor_slices((images, labels))
        batches = batches.batch(config.data.batch_size)
        iterator = iter(trainer.strategy.distribute_datasets_from_function(lambda _: batches))
        step = trainer.train_step_fn()
        for _ in range(updates * trainer.solver.accumulate):
            assert np.isfinite(float(step(iterator)))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return trainer


def _micro_batch_reference(trainer: Trainer, images, labels, updates: int) -> list[np.ndarray]:
    """The updates by hand in float32: per micro-batch, the gradient of the loss normalised
    over that micro-batch alone; their mean applied by a non-accumulating optimizer."""
    config, solver = trainer.config, trainer.solver
    model = build_model(config, NUM_CLASSES)
    model.set_weights(trainer.initial)
    optimizer = make_optimizer(dataclasses.replace(solver, accumulate=1))
    loss = SegmentationCrossEntropy(config.data.ignore_label, normalize=solver.normalize)
    size = config.data.batch_size
    for update in range(updates):
        gradients = []
        for micro in range(solver.accumulate):
            first = (update * solver.accumulate + micro) * size
            with tf.GradientTape() as tape:
                batch = images[first : first + size]
                value = loss(labels[first : first + size], model(batch, training=True))
            gradients.append(tape.gradient(value, model.trainable_variables))
        mean = [tf.add_n(list(parts)) / len(parts) for parts in zip(*gradients, strict=True)]
        optimizer.apply(mean, model.trainable_variables)
    return weights_of(model)


def test_a_new_fit_clears_gradient_sums_left_by_an_interrupted_one(tmp_path, rng):
    images, labels = _examples(rng, 2)
    trainer = _train_directly(_accumulating_config(2, 2), tmp_path, images, labels, updates=0)
    batches = tf.data.Dataset.from_tensor_slices((images[:2], labels[:2])).batch(2)
    iterator = iter(trainer.strategy.distribute_datasets_from_function(lambda _: batches))
    trainer.train_step_fn()(iterator)  # the first micro-batch of an update, then "interrupted"
    assert any(np.any(np.array(total)) for total in trainer.gradient_sums)
    trainer._clear_gradient_sums()
    assert not any(np.any(np.array(total)) for total in trainer.gradient_sums)


@pytest.mark.parametrize("normalize", ["batch", "valid"])
def test_accumulation_averages_micro_batch_gradients(tmp_path, rng, normalize):
    """accumulate=2 on batches of 2 applies the mean of the micro-batch gradients, each of a
    loss normalised over its own micro-batch (Caffe's iter_size); with "batch" that is
    exactly accumulate=1 on batches of 4, with "valid" (unequal ignore pixels) it is not.
    The poly schedule makes the rate depend on counting updates, not micro-batches."""
    images, labels = _examples(rng, 8)
    solver = {"normalize": normalize, "schedule": "poly", "power": 1.0}
    trainer = _train_directly(
        _accumulating_config(2, 2, **solver), tmp_path / "a", images, labels, updates=2
    )
    accumulated = weights_of(trainer.model)
    assert int(trainer.optimizer.iterations.numpy()) == 2
    assert all(not np.any(total.numpy()) for total in trainer.gradient_sums)

    expected = _micro_batch_reference(trainer, images, labels, updates=2)
    for got, want in zip(accumulated, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(accumulated, trainer.initial, strict=True))

    single = _train_directly(
        _accumulating_config(4, 1, **solver), tmp_path / "b", images, labels, updates=2
    )
    assert not single.gradient_sums
    np.testing.assert_array_equal(single.initial[0], trainer.initial[0])
    # float32 rounding of a sum scales with its largest terms: the absolute tolerance does too.
    alike = [
        np.allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want).max())))
        for got, want in zip(weights_of(single.model), accumulated, strict=True)
    ]
    assert all(alike) if normalize == "batch" else not all(alike), alike


@pytest.mark.parametrize(
    ("precision", "jit", "tolerance"), [("mixed_float16", False, 0.1), ("float32", True, 1e-4)]
)
def test_accumulation_under_loss_scaling_and_jit(tmp_path, rng, precision, jit, tolerance):
    """Loss-scaled gradients are summed and unscaled once; the XLA forward/backward adds up
    the same: both update as the float32 reference does, to float16's or XLA's rounding
    (a missing unscale or a sum for the mean would be off by far more)."""
    images, labels = _examples(rng, 8)
    config = _accumulating_config(2, 2, precision=precision, jit=jit)
    trainer = _train_directly(config, tmp_path, images, labels, updates=2)
    # No update was skipped as non-finite.
    assert int(trainer.optimizer.iterations.numpy()) == 2
    expected = _micro_batch_reference(trainer, images, labels, updates=2)
    for got, want, start in zip(weights_of(trainer.model), expected, trainer.initial, strict=True):
        update = np.abs(want - start).max()
        np.testing.assert_allclose(got - start, want - start, atol=tolerance * update + 1e-7)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_schedule_advances_once_per_update_under_accumulation(tmp_path, optimizer):
    """Poly over 3 updates of 2 micro-batches: the rate after update i is lr (1 - i/3)^0.9."""
    config = tiny_config(
        tmp_path / "records",
        solver={"optimizer": optimizer, "learning_rate": 0.05, "accumulate": 2, "schedule": "poly"},
        run={"steps_per_epoch": 1, "epochs": 3},
    )
    trainer = Trainer(config, str(tmp_path / "run"), verbose=0)
    assert trainer.fit()["step"] == 3
    lines = (tmp_path / "run" / runs.METRICS).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["step"] for record in records] == [1, 2, 3]
    expected = [0.05 * (1 - i / 3) ** 0.9 for i in (1, 2, 3)]
    np.testing.assert_allclose([r["learning_rate"] for r in records], expected, atol=1e-9)


# -- numerics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "jit"), [("mixed_bfloat16", False), ("mixed_float16", False), ("float32", True)]
)
def test_precision_and_jit_train(tmp_path, precision, jit):
    config = tiny_config(tmp_path / "records", run={"precision": precision, "jit": jit})
    trainer = Trainer(config, str(tmp_path / "run"), verbose=0)
    result = trainer.fit()
    assert result["step"] == 3
    compute = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
    assert trainer.model.get_layer("conv1_1").compute_dtype == compute[precision]
    scaled = isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


# -- the command line -------------------------------------------------------------------------


def test_train_cli_runs_the_default_recipe_with_overrides(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        str(REPO_ROOT / "training" / "train.py"),
        "--out", str(run_dir),
        "--steps-per-epoch", "2",
        "--epochs", "1",
        "--quiet",
        "--set", "model.backbone_options={width: 0.03125, fc_units: 8}",
        "--set", "data.split_options={train: {count: 8}, val: {count: 3}}",
        "--set", f"data.records_dir={tmp_path / 'records'}",
        "--set", "data.options={height: 32, width: 32}",
        "--set", "data.crop_size=32",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        assert key in done.stdout
    assert f"model        {run_dir / 'model.keras'}" in done.stdout
    assert f"saved_model  {run_dir / runs.EXPORT / '1'}" in done.stdout
    config = recipes.from_dict(runs.read_config(str(run_dir)))
    assert config.name == "shapes_fcn8s" and config.run.steps_per_epoch == 2
    assert config.model.backbone_options == {"width": 0.03125, "fc_units": 8}
    assert keras.models.load_model(run_dir / "model.keras").output_shape == (None, None, None, 6)
    # Mistakes get a message naming them and exit status 2, not a traceback.
    for extra, message in [
        ([], f"{run_dir} already holds a run"),
        (["--set", "data.bogus=1"], "unknown key 'data.bogus'"),
        (["--resume", str(tmp_path / "nowhere")], "nowhere is not a run folder"),
    ]:
        again = subprocess.run(
            [*command, *extra], env=environment, capture_output=True, text=True, timeout=240
        )
        assert again.returncode == 2 and message in again.stderr, again.stderr[-3000:]
        assert "Traceback" not in again.stderr


def test_skipped_float16_updates_still_count_for_resume(tmp_path, monkeypatch):
    # An initial loss scale of 2**40 overflows float16 gradients: the loss scaler skips the
    # update (optimizer.iterations stays), yet the batches were consumed.
    build = loop.build_optimizer

    def huge_scale(config, solver):
        inner = build(config, solver).inner_optimizer
        return keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**40)

    monkeypatch.setattr(loop, "build_optimizer", huge_scale)
    config = tiny_config(tmp_path / "records", run={"precision": "mixed_float16"})
    trainer = Trainer(config, str(tmp_path / "run"), verbose=0)
    result = trainer.fit()
    assert int(trainer.optimizer.iterations.numpy()) == 0  # every update was skipped
    assert result["step"] == 3 and int(trainer.updates.numpy()) == 3
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / runs.CHECKPOINTS)).endswith("ckpt-3")
    resumed = Trainer(config, str(tmp_path / "run"), verbose=0)
    resumed._setup(resume=True)
    assert int(resumed.updates.numpy()) == 3


def test_a_run_resumes_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config("records")  # relative, as typed on a command line
    Trainer(config, "run", verbose=0, command=["train.py", "--out", "run"]).fit()
    saved = recipes.from_dict(runs.read_config(str(tmp_path / "run")))
    assert saved.data.records_dir == str(tmp_path / "records")
    metadata = runs.read_metadata(str(tmp_path / "run"))
    assert metadata["command"][1:] == ["train.py", "--out", "run"]
    assert metadata["cwd"] == str(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    longer = recipes.override(saved, ["run.epochs=2"])
    result = Trainer(longer, str(tmp_path / "run"), verbose=0).fit(resume=True)
    assert result["step"] == 6
    assert not (tmp_path / "elsewhere" / "records").exists()  # the same records, not new ones


def test_every_worker_resumes_from_the_chiefs_checkpoint(tmp_path, monkeypatch):
    # A non-chief worker's own checkpoints are deleted when the run ends; resumed, it must
    # continue from the same update as the chief (else the collectives would hang).
    # One process plays both roles.
    config = tiny_config(tmp_path / "records", run={"eval_images": 0})
    run_dir = str(tmp_path / "run")
    starts = {}

    class Probe(Trainer):
        def _setup(self, resume):
            super()._setup(resume)
            starts[(self.chief, resume)] = int(self.updates.numpy())

    def play(chief: bool, config, resume: bool) -> None:
        monkeypatch.setattr(loop, "is_chief", lambda strategy: chief)
        monkeypatch.setattr(loop, "worker_index", lambda: 1)
        Probe(config, run_dir, verbose=0).fit(resume=resume)

    for chief in (True, False):
        play(chief, config, resume=False)
    assert not (tmp_path / "run" / "workers").exists()
    longer = recipes.override(config, ["run.epochs=2"])
    for chief in (False, True):  # the worker first: the chief's own resume moves its files on
        play(chief, longer, resume=True)
    assert starts == {(True, False): 0, (False, False): 0, (True, True): 3, (False, True): 3}


def test_the_training_stream_is_the_same_in_every_run_whatever_run_deterministic(tmp_path):
    config = tiny_config(tmp_path / "records", data={"scale_range": None, "mirror": False})
    assert not config.run.deterministic
    split = resolve_split(config.data, "train", verbose=False)
    context = tf.distribute.InputContext(1, 0, 1)

    def stream(skip: int = 0) -> list[bytes]:
        dataset = train_dataset_fn(split, config.data, 1, seed=0, skip_batches=skip)(context)
        return [images.numpy().tobytes() for images, _ in dataset.take(12)]

    whole = stream()
    assert stream() == whole
    assert stream(skip=5)[:7] == whole[5:]


def _train_cli():
    spec = importlib.util.spec_from_file_location("train_cli", REPO_ROOT / "training" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_training_data_without_validation_data_drops_the_recipes_validation():
    train = _train_cli()
    args = train._parser().parse_args(
        ["--config", str(REPO_ROOT / "training/configs/voc_fcn32s.yaml"), "--train-data", "x"]
    )
    config = recipes.override(recipes.load_recipe(args.config), train._assignments(args))
    assert config.data.train == "x" and config.data.val is None
    args = train._parser().parse_args(["--train-data", "x", "--val-data", "y"])
    assert "data.val=null" not in train._assignments(args)


def test_train_cli_warns_only_when_validation_is_really_dropped(tmp_path, monkeypatch, capsys):
    # A start refused by the set-up checks leaves no empty run folder behind either.
    train = _train_cli()
    monkeypatch.chdir(tmp_path)
    voc = str(REPO_ROOT / "training/configs/voc_fcn32s.yaml")
    for extra, warned in [([], True), (["--set", "data.val='mine/v*.tfrecord'"], False)]:
        with pytest.raises(SystemExit) as exit:
            train.main(["--config", voc, "--train-data", "mine/*.tfrecord", *extra])
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert ("warning: --train-data without --val-data" in err) == warned, err
        assert "data.train: no file matches" in err
        assert os.listdir(tmp_path / "runs") == []


def test_default_run_folders_are_never_shared(tmp_path):
    folders = {runs.new_run_dir(str(tmp_path), "fcn") for _ in range(3)}  # the same second
    assert len(folders) == 3 and all(os.path.isdir(folder) for folder in folders)


def test_no_tpu_is_a_clear_error():
    from fcn_tf.training.strategy import make_strategy

    with pytest.raises(ValueError, match=r"--strategy tpu: no TPU found \(no --tpu given"):
        make_strategy("tpu")


def test_converter_path_options_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = recipes.from_dict(
        {
            "data": {
                "options": {"voc_root": "VOCdevkit", "height": 32, "palette": "gs://b/p.json"},
                "split_options": {"train": {"root": "~/context"}},
            }
        }
    )
    data = recipes.absolute_paths(config).data
    assert data.options == {
        "voc_root": str(tmp_path / "VOCdevkit"),
        "height": 32,
        "palette": "gs://b/p.json",
    }
    assert data.split_options == {"train": {"root": os.path.expanduser("~/context")}}
