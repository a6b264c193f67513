"""Pretraining runs that other runs start from: named by their workdir, or cached.

Two experiments start from a network trained first: co-localisation's embedding CNN (appendix
A.2: "the CNN trained for digit classification", then fixed) and the CUB stand-in's pretrained
backbone. Each pretraining is an ordinary run of its own config (`configs/colocalisation.py:
embedding`, `configs/cub.py:pretrain`), trained by `stn.experiments.training.train_and_evaluate`
like any other. The config that uses it names the finished run's workdir
(`model.embedding.workdir`, `model.pretrain.workdir`), or leaves it empty for the cache: the
workdir `<root>/<kind>/<key>`, `key` a hash of the pretraining config (`config_key`), which the
first run that asks trains through the same loop (resuming it if an earlier one was stopped)
and every later run reads.

Either way `pretrained_model` checks that the workdir holds a finished run of exactly the
pretraining config asked for (a copied, stale or other run is one line naming the fields that
differ) and restores its final checkpoint, verified as every restore is
(`stn.experiments.evaluation.restore_run`).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
from absl import logging
from flax import nnx

from stn.experiments import config_compare, evaluation
from stn.experiments import workdir as workdir_lib

ENV_ROOT = "STN_CACHE_DIR"
DEFAULT_ROOT = os.path.join("~", ".cache", "stn")


def cache_root(configured: str = "", kind: str = "embeddings") -> str:
    """The folder holding cached runs of one `kind` (co-localisation's "embeddings", the CUB
    stand-in's pretrained "backbones"): `configured`, else `$STN_CACHE_DIR/<kind>`, else
    `~/.cache/stn/<kind>`."""
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    base = os.environ.get(ENV_ROOT) or DEFAULT_ROOT
    return os.path.abspath(os.path.join(os.path.expanduser(base), kind))


def config_key(spec: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of `spec` as sorted JSON (the folder name)."""
    text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_workdir(config, cache_dir: str, kind: str) -> str:
    """The cache's workdir for the pretraining `config`: `<cache_root>/<config_key(config)>`."""
    return os.path.join(cache_root(cache_dir, kind), config_key(config.to_dict()))


def _finished_record(workdir: str, where: str) -> dict[str, Any]:
    """The `results.json` of the finished run in `workdir`; one line when there is none."""
    path = os.path.join(workdir, workdir_lib.RESULTS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{where} holds no finished run (no {workdir_lib.RESULTS_FILE}); train "
                         f"it to the end first (train.py --workdir={workdir} with its config)")
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: {path} is unreadable ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError(f"{where}: {path} records no config")
    return record


def pretrained_model(config, *, workdir: str, cache_dir: str, kind: str,
                     field: str) -> tuple[nnx.Module, dict[str, Any]]:
    """The trained model of a finished run of the pretraining `config`, and its results record.

    Args:
      config: the pretraining run's config (an `ml_collections.ConfigDict`).
      workdir: that run's workdir, as the downstream config names it; "" for the cache
        (`cached_workdir`), where the run is trained first when it has not finished.
      cache_dir: the cache's folder ("" for `$STN_CACHE_DIR` or `~/.cache/stn`).
      kind: the cache's subfolder ("embeddings", "backbones").
      field: the downstream config's field that names `workdir`, for messages.
    Returns:
      `(model, record)`: the model at the run's final checkpoint (verified), and the run's
      `results.json` with `workdir` added.
    Raises:
      ValueError: one line, for a workdir without a finished run, a run of another config (the
        fields that differ), or a final checkpoint that does not verify.
    """
    cached = not workdir
    if cached:
        workdir = cached_workdir(config, cache_dir, kind)
        if not os.path.isfile(os.path.join(workdir, workdir_lib.RESULTS_FILE)):
            print(f"{field} is empty: training {config.name} once, cached in {workdir}",
                  flush=True)
            from stn.experiments import training  # only to fill the cache

            training.train_and_evaluate(config, workdir)
    where = f"the cached run in {workdir}" if cached else f"{field}={workdir!r}"
    remedy = "delete that folder to train it again" if cached else (
        f"point {field} at a run of that config (or leave it empty for the cache)")
    record = _finished_record(workdir, where)
    wanted = config.to_dict()
    fields = config_compare.differing_fields(record["config"], wanted)
    if fields:
        raise ValueError(f"{where} is a run of another config than {config.name}'s "
                         f"({config_compare.describe(record['config'], wanted, fields)}); "
                         f"{remedy}")
    previous = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only manager saves nothing
    try:
        _, _, graphdef, state, step, _ = evaluation.restore_run(workdir)
    except ValueError as e:
        raise ValueError(f"{where}: its checkpoint does not restore ({e}); {remedy}") from None
    finally:
        logging.set_verbosity(previous)
    if step != int(record.get("steps", -1)):
        raise ValueError(f"{where}: its newest checkpoint is step {step}, not the final step "
                         f"{record.get('steps')}; {remedy}")
    return nnx.merge(graphdef, jax.device_get(state)), {**record, "workdir": workdir}
