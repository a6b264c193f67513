"""How far a trained 2-D transformer zooms out: its grid's footprint on validation images.

    python tools/analyses/antialias_footprint.py WORKDIR [WORKDIR ...]

For each finished run (an MNIST classifier with one 2-D transformer, e.g. configs/mnist.py), it
restores the newest checkpoint, builds the transformer's grid on the first 500 validation images
and prints the share of output points whose footprint `max(s_x, s_y)` (stn.sampling's Jacobian
row norms, unclipped above) exceeds 1, i.e. where `antialias=True` changes the sampler, and its
median and 90th percentile.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from stn.experiments import checkpointing, evaluation, tasks  # noqa: E402
from stn import sampling


def footprints(workdir: str) -> np.ndarray:
    """``max(s_x, s_y)`` at every output point of the run's transformer on 500 validation images."""
    config = evaluation.config_of_run(workdir)
    task = tasks.for_config(config)
    model = task.make_model(config, task.input_shape(config), nnx.Rngs(params=config.seed))
    graphdef, state = nnx.split(model)
    mngr = checkpointing.manager(workdir, read_only=True)
    state, _ = checkpointing.restore(mngr, max(mngr.all_steps()), state)
    model = nnx.merge(graphdef, state)
    images = jnp.asarray(task.load_eval_set(config, "validation")[0]["image"][:500])
    grid = model.transformer.params_and_grid(images)[1]
    height, width = images.shape[1:3]
    coords = [sampling.unnormalize(grid[..., 1], height, False),
              sampling.unnormalize(grid[..., 0], width, False)]
    scales = sampling._antialias_scales(coords, jnp.ones(grid.shape[:-1], bool), 1e6)
    return np.asarray(jnp.maximum(*scales))


def main() -> None:
    for workdir in sys.argv[1:]:
        widest = footprints(workdir)
        print(f"{workdir}: footprint > 1 at {np.mean(widest > 1):.1%} of points, median "
              f"{np.median(widest):.2f}, 90th percentile {np.percentile(widest, 90):.2f}")


if __name__ == "__main__":
    main()
