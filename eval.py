"""Evaluates a run's checkpoint; the last line of stdout is one JSON object.

    python eval.py --workdir=runs/quick                       # the run's own config.json
    python eval.py --workdir=runs/quick --data=npz:digits.npz
    python eval.py --workdir=runs/quick --data=idx:/path/to/mnist --checkpoint_step=1000
    python eval.py --workdir=runs/quick --data=validation

The run is evaluated as it was trained: with its `config.json`. `--config` (and overrides) may
be given, but a field that changes the model, the data or the split is refused; only fields
that cannot change the numbers (`eval.batch_size`, intervals, paths) may differ. `--data` picks
the set: `test` (default), `validation`, or external data that the config's task reads
(docs/guides/training.md lists the formats of each task). The checkpoint is verified (digest,
finiteness, parameter paths and shapes) before it is evaluated.
"""
import json

from absl import app, flags, logging
from ml_collections import config_flags

from stn.experiments import evaluation, host

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Optional: the run's config file[:arg] and "
                                "overrides; default the config.json the run wrote in --workdir. "
                                "Fields that change the numbers must equal the run's.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "The run's workdir (holds checkpoints/).")
flags.DEFINE_string("data", "test", "test, validation, or external data (e.g. idx:DIR, "
                    "npz:FILE).")
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step; default the latest.")
flags.mark_flags_as_required(["workdir"])


def print_result(result: dict) -> None:
    """One readable line, then the result as one JSON line (the last line of stdout)."""
    split = "validation" if result["data"] == "validation" else "test"
    error = result[f"{split}_error"]
    print(f"step {result['step']}: {split} error {error:.4f} ({100 * error:.2f}%) on "
          f"{result['num_examples']} examples of {result['data']}")
    print(json.dumps(result), flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only manager saves nothing
    try:
        result = evaluation.evaluate_checkpoint(FLAGS.config, FLAGS.workdir,
                                                step=FLAGS.checkpoint_step, data=FLAGS.data)
    except ValueError as e:
        host.exit_with_message("eval.py", e, 1)
    except evaluation.ResultNotSaved as e:  # the numbers are right: print them, then say so
        print_result(e.result)
        host.exit_with_message("eval.py", f"{e} (the result above is complete)", 0)
    except OSError as e:
        host.exit_with_message("eval.py", f"{e.strerror or e}: {e.filename or ''}", 1)
    else:
        print_result(result)


if __name__ == "__main__":
    host.run_app(main, "eval.py")
