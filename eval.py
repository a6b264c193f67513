"""Evaluates a run's checkpoint; the last line of stdout is one JSON object.

    python eval.py --config=configs/mnist.py:quick --workdir=/tmp/quick
    python eval.py --config=configs/mnist.py:quick --workdir=/tmp/quick --data=npz:digits.npz
    python eval.py ... --data=idx:/path/to/mnist --checkpoint_step=1000
    python eval.py ... --data=validation

`--data` picks the set: `test` (default), `validation`, or external data that the config's task
reads (docs/training.md lists the formats of each task).
"""
import json

from absl import app, flags, logging
from ml_collections import config_flags

from stn import evaluation, host

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The run's config file[:arg].", lock_config=True)
flags.DEFINE_string("workdir", None, "The run's workdir (holds checkpoints/).")
flags.DEFINE_string("data", "test", "test, validation, or external data (e.g. idx:DIR, "
                    "npz:FILE).")
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step; default the latest.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only manager saves nothing
    try:
        result = evaluation.evaluate_checkpoint(FLAGS.config, FLAGS.workdir,
                                                step=FLAGS.checkpoint_step, data=FLAGS.data)
    except ValueError as e:
        host.exit_with_message("eval.py", e, 1)
    split = "validation" if FLAGS.data == "validation" else "test"
    error = result[f"{split}_error"]
    print(f"step {result['step']}: {split} error {error:.4f} ({100 * error:.2f}%) on "
          f"{result['num_examples']} examples of {result['data']}")
    print(json.dumps(result))


if __name__ == "__main__":
    host.run_app(main, "eval.py")
