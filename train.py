"""Trains a config: `python train.py --config=configs/mnist.py:quick --workdir=runs/quick`.

Any field can be overridden, e.g. `--config.train.steps=1000 --config.data.source=idx:DIR`.
Rerunning with the same --workdir resumes from its newest good checkpoint.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from stn.experiments import host, training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file[:arg], e.g. configs/mnist.py:quick.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics, images, results).")
flags.DEFINE_integer("cpu_devices", 0, "Run JAX's CPU backend as this many devices, the batch split "
                     "over them (faster on a CPU, docs/reports/performance.md); 0: one per core, "
                     "at most the largest count that divides the batch (1 for a multi-process run).")
flags.DEFINE_bool("deterministic", False, "On a GPU: bit-identical gradients run after run "
                  "(XLA's deterministic scatter and reductions; slower, docs/reports/performance.md).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    host.keep_freed_memory()  # faster XLA on CPU (no per-step page faults); same results
    try:
        cpu_devices = FLAGS.cpu_devices or host.default_cpu_devices(
            int(FLAGS.config.train.batch_size), bool(FLAGS.config.get("distributed", False)))
        if cpu_devices != 1:
            host.split_cpu(cpu_devices)
        if FLAGS.deterministic:
            host.deterministic_gpu_ops()
        training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except training.TrainingInterrupted as e:
        host.exit_with_message("train.py", e, 130)
    except (ValueError, training.Diverged) as e:
        host.exit_with_message("train.py", e, 1)
    except OSError as e:  # a full disk, a read-only folder: say which file, not a traceback
        host.exit_with_message("train.py", f"{e.strerror or e}: {e.filename or ''}", 1)


if __name__ == "__main__":
    host.run_app(main, "train.py")
