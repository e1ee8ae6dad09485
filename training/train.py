"""Train an FCN from a recipe: ``python training/train.py [--config RECIPE.yaml] [options]``.

With no arguments it is the project's main job: FCN-8s on the built-in shapes data
(training/configs/shapes_fcn8s.yaml), evaluated on shapes validation, exported, and a summary
printed. ``--set section.key=value`` overrides any recipe field; the dedicated options below
are shorthands for the common ones. Everything a run writes goes into its folder
(``--out``, by default ``runs/<recipe>-<time>``); ``--resume FOLDER`` continues a run at
the exact next step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RECIPE = os.path.join(HERE, "configs", "shapes_fcn8s.yaml")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (most options default to the recipe's value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python training/train.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--config", default=DEFAULT_RECIPE, help="a YAML recipe")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe field (YAML value; repeatable)")  # fmt: skip
    parser.add_argument("--out", help="the run folder; runs/<recipe>-<time> when not given")
    parser.add_argument("--resume", metavar="RUN", help="continue this run folder")
    parser.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT", help="staged training")
    parser.add_argument("--backbone-weights", metavar="FILE", help="ImageNet VGG16 .h5 file")
    parser.add_argument("--strategy", choices=["default", "one_device", "mirrored",
                                               "multi_worker", "tpu"])  # fmt: skip
    parser.add_argument("--tpu", help="TPU name or address for --strategy tpu")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA compilation of the step")  # fmt: skip
    parser.add_argument("--train-data", metavar="PATTERN", help="training TFRecords")
    parser.add_argument("--val-data", metavar="PATTERN", help="validation TFRecords")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--deterministic", action="store_true", help="op determinism on")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _assignments(args: argparse.Namespace) -> list[str]:
    shorthands = {
        "backbone_weights": "model.backbone_weights",
        "strategy": "run.strategy",
        "tpu": "run.tpu",
        "precision": "run.precision",
        "jit": "run.jit",
        "train_data": "data.train",
        "val_data": "data.val",
        "epochs": "run.epochs",
        "steps_per_epoch": "run.steps_per_epoch",
        "batch_size": "data.batch_size",
        "seed": "run.seed",
    }
    assignments = []
    for name, key in shorthands.items():
        value = getattr(args, name)
        if value is not None:
            assignments.append(f"{key}={json.dumps(value)}")
    if args.train_data is not None and args.val_data is None and not args.resume:
        # Own training records: the recipe's validation data (its converter's split or its
        # data.val pattern) belongs to another dataset.
        assignments.append("data.val=null")
    if args.deterministic:
        assignments.append("run.deterministic=true")
    return assignments + args.set


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from fcn_tf.training import config as recipes
    from fcn_tf.training.loop import NonFiniteLossError, Trainer
    from fcn_tf.training.runs import new_run_dir, read_config

    made = None  # the run folder this command created, removed again if the run never starts
    try:
        if args.resume:
            config = recipes.from_dict(read_config(args.resume), where=args.resume)
            run_dir = args.resume
        else:
            config = recipes.load_recipe(args.config)
            run_dir = args.out
        recipe_val = config.data.val
        config = recipes.override(config, _assignments(args))
        if recipe_val and config.data.val is None and args.train_data is not None:
            print(
                f"{parser.prog}: warning: --train-data without --val-data: no validation "
                f"(the recipe's data.val {recipe_val!r} is another dataset's); give --val-data",
                file=sys.stderr,
            )
        if run_dir is None:
            if config.run.strategy == "multi_worker":
                raise ValueError(
                    "--strategy multi_worker needs --out: the folder every worker shares"
                )
            run_dir = made = new_run_dir("runs", config.name)
        command = [os.path.abspath(__file__), *(sys.argv[1:] if argv is None else argv)]
        trainer = Trainer(
            config,
            run_dir,
            init_from=args.init_from,
            verbose=0 if args.quiet else 1,
            command=command,
        )
        result = trainer.fit(resume=bool(args.resume))
    except NonFiniteLossError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        # What the recipe, override and set-up checks refuse (records, classes, --init-from,
        # run folder): a message, not a traceback. TensorFlow's own errors keep theirs.
        _remove_if_empty(made)
        parser.error(str(error))
    if trainer.chief:
        _report(result, config.name)
    return 0


def _remove_if_empty(folder: str | None) -> None:
    if folder is not None:
        with contextlib.suppress(OSError):  # not empty: a run started and wrote there
            os.rmdir(folder)


def _report(result: dict, name: str) -> None:
    val = result["val"]
    if val is not None:
        print("\nValidation (last epoch):")
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
            print(f"  {key:<22} {val[key]:.4f}")
        per_class = val["per_class_iu"].items()
        print("  per-class IU: " + ", ".join(f"{k} {v:.3f}" for k, v in per_class))
    if result["best_mean_iu"] is not None:
        saved = "model.keras and export" if "model" in result["files"] else "best/"
        print(f"Best mean IU: {result['best_mean_iu']:.4f} (the weights in {saved})")
    print("Files:")
    for key, path in result["files"].items():
        print(f"  {key:<12} {path}")
    if "saved_model" in result["files"]:
        base = os.path.dirname(result["files"]["saved_model"])
        print(
            f"Serve it: python serving/local_server.py --model-name {name} "
            f"--model-base-path {base} --port 8500\n"
            f"Ask it:   python serving/client.py --server localhost:8500 --model {name} IMAGE..."
        )


if __name__ == "__main__":
    sys.exit(main())
