"""Train a crowd-counting density regressor: ``python train.py [--config CONFIG] [--workdir DIR]``.

    python train.py --config configs/synthetic.py --workdir /tmp/gcc_synthetic   # the default config
    python train.py --config configs/sha.py --workdir runs/sha \\
        --config.dataset.manual_dir=RAW --config.loss.name=bl --config.batch_size=8
    python train.py --config configs/sha.py:runlocal      # an end-to-end check (a minute or two)

Running it again with the same ``--workdir`` resumes where the run stopped. SIGTERM or Ctrl-C
(SIGINT) stops a run cleanly: the current step finishes, a checkpoint of it is saved, the line
``stopped at step N; checkpoint saved; run the same command to resume`` is printed and the
exit status is 75 (a second signal stops at once). Without
``--workdir`` the run goes to ``/tmp/gcc_jax/<config file name>``. A workdir whose checkpoint
belongs to a model of other shapes is refused before anything is written. Errors end in one
``error: ...`` line; ``--debug`` shows the traceback.

Several hosts: start the same command on every host with ``--distributed`` (JAX detects
Cloud TPU, SLURM, Open MPI and Kubernetes clusters), or give ``--coordinator_address``,
``--num_processes`` and ``--process_id`` explicitly. Everything else lives in
:func:`gcc_jax.training.train_and_evaluate`.
"""

import os
import pathlib

# TensorFlow only feeds data here: silence most of its C++ start-up messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gcc_jax import cli  # noqa: E402  (the error reporting only: imports no JAX)

FLAGS = flags.FLAGS
# The embedded default: synthetic crowds, trainable on a laptop CPU in minutes, no download.
_DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parent / "configs" / "synthetic.py")
config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Config file, e.g. configs/sha.py (or configs/sha.py:runlocal).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, pictures); default /tmp/gcc_jax/<config name>.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host; cluster auto-detected).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host without auto-detection).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host without auto-detection).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-host without auto-detection).")
cli.define_debug_flag()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # orbax logs every checkpoint step at INFO through absl; keep the console to our lines.
    cli.quiet_library_logs(verbose=FLAGS["verbosity"].present or FLAGS.debug)
    # after flag parsing: importing JAX must not precede distributed start-up
    from gcc_jax import training
    from gcc_jax.runtime import initialize_distributed

    if FLAGS.distributed or FLAGS.coordinator_address:
        initialize_distributed(
            coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes, process_id=FLAGS.process_id
        )
    workdir = FLAGS.workdir
    if workdir is None:
        config_file = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
        workdir = f"/tmp/gcc_jax/{pathlib.Path(config_file).stem}"

    def train():
        try:
            training.train_and_evaluate(FLAGS.config, workdir)
        except training.TrainingStopped as stopped:
            print(stopped, flush=True)
            return training.STOPPED_STATUS

    return cli.run(train, debug=FLAGS.debug)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_absl_flags)
