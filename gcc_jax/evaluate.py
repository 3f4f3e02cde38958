"""Evaluate a checkpoint on a split and print / write its counting and localization metrics.

    # a training run's best checkpoint, config read from the workdir
    python -m gcc_jax.evaluate --workdir /tmp/gcc_synthetic [--checkpoint best|latest|STEP] [--split test]
    # a model directory (python -m gcc_jax.convert_weights, e.g. official GL weights)
    python -m gcc_jax.evaluate --config configs/sha.py --checkpoint MODEL_DIR [--config.dataset.data_dir=...]
    # choose the localization threshold on a validation split (stored for evaluate and predict)
    python -m gcc_jax.evaluate --workdir /tmp/gcc_synthetic --split val --choose_threshold

Prints one JSON object (``mae``, ``rmse`` — the literature's "MSE" —, ``nae``, ``game0..3``,
``trivial_mae`` / ``trivial_rmse`` of the mean-training-count predictor, ``num_images``,
``loc/threshold`` and ``loc/{precision,recall,f1}_<setting>`` (see
:func:`gcc_jax.training.evaluate`), ``checkpoint``, ``step``, ``split``) and writes it to
``--output`` (default ``WORKDIR/eval_<split>_<checkpoint>.json`` when a workdir is given, the
split expression reduced to a file name: ``test[:10]`` → ``eval_test_10_best.json``). A
progress bar with the images done and the time left goes to stderr (``--noprogress`` hides
it). Errors end in one ``error:`` line (``--debug`` shows the traceback); the libraries' INFO
messages stay off the console unless ``--verbosity`` or ``--debug`` is given. Runs on this
process's devices; the work is :func:`gcc_jax.inference.evaluate_checkpoint`.

Localization threshold: ``--threshold``, else the one stored by ``--choose_threshold``
(``localization_threshold.json`` in the workdir, or in the model directory), else
``config.localization.threshold`` (:func:`gcc_jax.inference.resolve_localization`).
``--choose_threshold`` picks the threshold with the best F1 on the evaluated split
(:func:`gcc_jax.localization_scoring.choose_localization_threshold`), stores it with its
precision / recall / F1 curve, and reports the metrics at it: choose on a validation split,
then evaluate the test split with the stored value.
"""

from __future__ import annotations

import os

# TensorFlow (which feeds the evaluation data) reads this when it loads, at the imports below.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402  (the imports after TF_CPP_MIN_LOG_LEVEL)
import pathlib  # noqa: E402
import re  # noqa: E402

from gcc_jax import cli, inference  # noqa: E402
from gcc_jax.training import config as config_lib  # noqa: E402

__all__ = ["main", "output_name"]


def output_name(split: str, checkpoint: str) -> str:
    """``eval_<split>_<checkpoint>.json`` with the split expression made a plain file name.

    ``test[:10]`` gives ``eval_test_10_best.json``, ``train+val`` stays; a model directory's
    checkpoint is named by its folder.
    """
    name = checkpoint if inference.is_run_checkpoint(checkpoint) else pathlib.Path(checkpoint).name
    plain = re.sub(r"[^\w.+-]+", "_", split).strip("_")
    return f"eval_{plain}_{name}.json"


def main(argv) -> int:
    from absl import flags

    cli.quiet_library_logs(verbose=flags.FLAGS["verbosity"].present or flags.FLAGS.debug)
    return cli.run(lambda: _evaluate_command(argv, flags.FLAGS), debug=flags.FLAGS.debug)


def _evaluate_command(argv, flags_) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    workdir = flags_.workdir
    config = config_lib.config_for_command(flags_.config, workdir)
    metrics = inference.evaluate_checkpoint(
        config, workdir=workdir, checkpoint=flags_.checkpoint, split=flags_.split, threshold=flags_.threshold,
        pixel_offset=flags_.pixel_offset, one_per_plateau=flags_.one_per_plateau,
        choose_threshold=flags_.choose_threshold, progress=flags_.progress,
    )  # fmt: skip
    line = json.dumps(metrics)
    print(line)
    output = flags_.output
    if output is None and workdir is not None:
        output = pathlib.Path(workdir) / output_name(metrics["split"], flags_.checkpoint)
    if output is not None:
        pathlib.Path(output).write_text(line + "\n")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (default: the workdir's config.json).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Training run directory.")
    flags.DEFINE_string("checkpoint", "best", "best | latest | STEP (of --workdir) | path of a model directory.")
    flags.DEFINE_string("split", None, "Split to evaluate (default: config.dataset.eval_split).")
    flags.DEFINE_string("output", None, "JSON file for the metrics (default: WORKDIR/eval_<split>_<checkpoint>.json).")
    flags.DEFINE_float("threshold", None, "Localization peak threshold (default: the stored choice, else the config's).")
    flags.DEFINE_float("pixel_offset", None, "Pixels added to detected points (default: the stored choice's, else the config's).")
    flags.DEFINE_boolean(
        "one_per_plateau", None, "One point per plateau of equal maxima (default: the stored choice's, else the config's)."
    )
    flags.DEFINE_boolean(
        "choose_threshold", False,
        f"Choose the localization threshold with the best F1 on --split and store it ({inference.THRESHOLD_FILE}).",
    )  # fmt: skip
    flags.DEFINE_boolean("progress", True, "Show a progress bar with the time left on stderr.")
    cli.define_debug_flag()


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main, flags_parser=cli.parse_absl_flags)
