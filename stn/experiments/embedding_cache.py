"""A trained network's weights kept on disk beside the config that trained them, reused by every
run and every `eval.py` call that asks for the same config (co-localisation's embedding CNN,
appendix A.2: "the CNN trained for digit classification", trained once and then fixed). The CUB
stand-in's pretrained backbone (`stn.experiments.tasks.cub.pretrained_weights`, a timm safetensors file)
shares its root, key and one-line refusal.

Each entry is a folder `<root>/<key>` where `key` hashes the training config (`config_key`):
`config.json` (that config and what training measured) and `weights.npz` (the parameter leaves
by path). `load_or_train` trains only when the folder is missing, and refuses with one line
when the folder's stored config differs from the requested one (a hand-copied or stale folder).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import jax
import numpy as np

from stn.experiments import metrics_io

ENV_ROOT = "STN_CACHE_DIR"
DEFAULT_ROOT = os.path.join("~", ".cache", "stn")


def cache_root(configured: str = "", kind: str = "embeddings") -> str:
    """The folder holding cached networks of one `kind` (co-localisation's "embeddings", the
    CUB stand-in's pretrained "backbones"): `configured`, else `$STN_CACHE_DIR/<kind>`, else
    `~/.cache/stn/<kind>`."""
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    base = os.environ.get(ENV_ROOT) or DEFAULT_ROOT
    return os.path.abspath(os.path.join(os.path.expanduser(base), kind))


def config_key(spec: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of `spec` as sorted JSON (the folder name)."""
    text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _leaf_names(tree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def save(folder: str, spec: dict[str, Any], tree, measured: dict[str, Any]) -> None:
    """Writes `tree`'s leaves to `folder/weights.npz` and `{"config": spec, **measured}` to
    `folder/config.json` (the json last, so a folder with a config holds its weights)."""
    os.makedirs(folder, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(jax.device_get(tree))
    arrays = {f"leaf{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    temporary = os.path.join(folder, f"weights.tmp{os.getpid()}.npz")
    np.savez(temporary, names=np.asarray(_leaf_names(tree)), **arrays)
    os.replace(temporary, os.path.join(folder, "weights.npz"))
    metrics_io.write_json(os.path.join(folder, "config.json"), {"config": spec, **measured})


def differences(stored: dict, wanted: dict) -> str:
    """`key: stored X, asked Y` for each key whose value differs, comma-separated (one line)."""
    keys = sorted(set(stored) | set(wanted))
    return ", ".join(f"{k}: stored {stored.get(k)!r}, asked {wanted.get(k)!r}"
                     for k in keys if stored.get(k) != wanted.get(k))


def load(folder: str, spec: dict[str, Any], template) -> tuple[Any, dict]:
    """`template` (a pytree of the right structure) with the leaves stored in `folder`, and the
    stored record; a one-line ValueError when the stored config is not `spec` or the stored
    leaves do not fit `template`."""
    with open(os.path.join(folder, "config.json")) as f:
        record = json.load(f)
    if record.get("config") != spec:
        raise ValueError(f"the cached embedding in {folder} was trained with another config "
                         f"({differences(record.get('config') or {}, spec)}); delete that "
                         f"folder or set another model.embedding.cache_dir")
    with np.load(os.path.join(folder, "weights.npz")) as stored:
        names = [str(n) for n in stored["names"]]
        leaves = [stored[f"leaf{i:04d}"] for i in range(len(names))]
    expected = jax.tree_util.tree_leaves(template)
    if names != _leaf_names(template) or any(
            a.shape != np.shape(b) for a, b in zip(leaves, expected)):
        raise ValueError(f"the cached weights in {folder} do not fit the network built for this "
                         f"config; delete that folder to retrain")
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, leaves), record


def load_or_train(root: str, spec: dict[str, Any], template,
                  train: Callable[[], tuple[Any, dict]]) -> tuple[Any, dict]:
    """The weights cached under `root` for `spec` (folder `root/config_key(spec)`), training
    them with `train() -> (tree, measured)` and caching them first when absent. Returns
    `(tree, record)`; `record` holds `config` (= spec), what `train` measured, and `folder`."""
    folder = os.path.join(root, config_key(spec))
    if not os.path.isfile(os.path.join(folder, "config.json")):
        tree, measured = train()
        save(folder, spec, tree, measured)
    tree, record = load(folder, spec, template)
    return tree, {**record, "folder": folder}
