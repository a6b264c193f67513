"""Evaluates a run's checkpoint; the last line of stdout is one JSON object.

    python eval.py --config=configs/mnist.py:quick --workdir=/tmp/quick
    python eval.py --config=configs/mnist.py:quick --workdir=/tmp/quick --data=npz:digits.npz
    python eval.py ... --data=idx:/path/to/mnist --checkpoint_step=1000

`--data` evaluates on local data instead of the config's test set (see stn/evaluation.py for
the accepted formats; smaller images are centred on a zero canvas, larger ones are rejected).
"""
import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from stn import evaluation

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The run's config file[:arg].", lock_config=True)
flags.DEFINE_string("workdir", None, "The run's workdir (holds checkpoints/).")
flags.DEFINE_string("data", None, "idx:DIR or npz:FILE; default the config's test set.")
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step; default the latest.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        result = evaluation.evaluate_checkpoint(FLAGS.config, FLAGS.workdir,
                                                step=FLAGS.checkpoint_step, data=FLAGS.data)
    except ValueError as e:
        print(f"eval.py: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"step {result['step']}: test error {result['test_error']:.4f} "
          f"({100 * result['test_error']:.2f}%) on {result['num_examples']} examples of "
          f"{result['data']}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
