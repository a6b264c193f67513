"""A run's resolved config, and which of its fields differ from another run's.

`resolve(spec, overrides)` builds the config exactly as `train.py --config=SPEC
--config.KEY=VALUE ...` does (ml_collections' config flag, locked), as the plain dict that
`config.json` and `results.json` record; `run_config(workdir)` reads the one a run recorded.
`differing_fields(old, new)` names the fields whose values change the computation. Together
they decide whether an existing run may stand for a requested one: the sweep runner skips a
point only when its finished run's config has no differing field, a rerun resumes only the
same config, and eval.py evaluates a run only with its own. The tables use the same list
(`NON_COMPUTATIONAL`): runs that differ in nothing else but their seed are one setting.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from stn.experiments import workdir as workdir_lib

#: Fields that do not change what is computed, only what is logged, kept or called, or how the
#: computation is spread: the run's `name` (a label; the workdir identifies the run, and
#: config.json is rewritten at each start), how often to log, evaluate and checkpoint, how many
#: checkpoints and pictures to keep (checkpoint/resume is bit-identical, docs/guides/training.md),
#: how far the host runs ahead, what is also evaluated during training, the evaluation batch
#: (padding is masked out), multi-host start-up, where the SVHN archives are read from the first
#: time the prepared set is built, and where co-localisation's cached embedding lives (its
#: weights are checked against the config that trained them, stn.experiments.embedding_cache).
#: tests/experiments/test_config_compare_fields.py classes every field of every config file,
#: checks this set against its harmless class, and by training that changing them leaves the
#: numbers bit-identical.
NON_COMPUTATIONAL = frozenset({
    "name", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.num_images", "train.max_steps_in_flight", "eval.batch_size",
    "eval.test_during_training", "distributed", "data.manual_dir", "model.embedding.cache_dir",
})
STEPS = "train.steps"
#: Fields added after runs were recorded, with the value that reproduces those runs: a field
#: absent from one config compares as this value (so an old run still stands for the default),
#: and any other value differs. `model.antialias`: False is the plain sampler;
#: `model.translation` (co-localisation): "inside", the box kept inside the image.
ADDED_DEFAULTS: Mapping[str, Any] = {"model.antialias": False, "model.translation": "inside"}


def format_value(value: bool | int | float | str) -> str:
    """A config value as text that `--config.KEY=` parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # repr round-trips exactly
    return str(value)


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """`{"train.steps": 5}` -> `["--config.train.steps=5"]`, in the mapping's order."""
    return [f"--config.{key}={format_value(value)}" for key, value in overrides.items()]


def _last_line(error: BaseException) -> str:
    """The informative line of a config error (ml_collections wraps a traceback around it)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def resolve(config_spec: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The config that `train.py --config=config_spec` with `overrides` runs, as a plain dict.

    Parsed by the same ml_collections flag as train.py's (a locked config: an override of a
    field the config lacks is an error), then made JSON-plain (tuples become lists), so it
    compares equal to the `config` recorded in a run's `results.json` / `config.json`.

    Args:
      config_spec: `path/to/config.py[:arg]`, relative to the current directory.
      overrides: dotted field -> bool, int, float or str (as in a sweep point).
    Raises:
      ValueError: one line naming the spec, for a missing or failing config file, an unknown
        field or a value of the wrong type.
    """
    from absl import flags
    from ml_collections import config_flags

    argv = ["resolve", f"--config={config_spec}", *override_args(overrides)]
    values = flags.FlagValues()  # private to this call: train.py's own flags are untouched
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    try:
        values(argv)
        config = values.config.to_dict()
    except AttributeError as e:  # a locked ConfigDict's unknown field: "'nope'"
        raise ValueError(f"config {config_spec}: an override names no field of it "
                         f"({_last_line(e)}); fields are overridden as --config.KEY=VALUE "
                         f"with KEY one of the config's dotted names") from None
    except Exception as e:  # absl flag errors, OSError (missing file), errors in get_config
        raise ValueError(f"config {config_spec} with {override_args(overrides)}: "
                         f"{_last_line(e)}") from None
    return json.loads(json.dumps(config))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"steps": 5}}` -> `{"train.steps": 5}` (dicts only; lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def computational(config: Mapping[str, Any], ignore: Iterable[str] = NON_COMPUTATIONAL
                  ) -> dict[str, Any]:
    """The flattened, JSON-plain config without the `ignore`d fields, each field of
    `ADDED_DEFAULTS` that it lacks filled in: what two configs are compared on."""
    flat = {**ADDED_DEFAULTS, **flatten(json.loads(json.dumps(config)))}
    ignored = set(ignore)
    return {name: value for name, value in flat.items() if name not in ignored}


def differing_fields(old: Mapping[str, Any], new: Mapping[str, Any], *,
                     steps_may_grow: bool = False,
                     ignore: Iterable[str] = NON_COMPUTATIONAL) -> list[str]:
    """Sorted dotted names of the fields in which config `new` changes `old`'s computation.

    A field present in one config only counts as differing (a field added since the old run
    may change what runs), unless it is in `ADDED_DEFAULTS` and the other config holds its
    default. Values compare as JSON values (a tuple equals its list).

    Args:
      old: the existing run's config (as recorded in its `config.json` / `results.json`).
      new: the requested config (e.g. `resolve(...)`).
      steps_may_grow: accept a larger `train.steps` in `new` (a resumed run trains on); a
        smaller one still differs.
      ignore: fields that do not change the computation (default `NON_COMPUTATIONAL`).
    """
    old_flat, new_flat = computational(old, ignore), computational(new, ignore)
    names = []
    for name in sorted(set(old_flat) | set(new_flat)):
        if old_flat.get(name, _MISSING) == new_flat.get(name, _MISSING):
            continue
        if (steps_may_grow and name == STEPS and isinstance(old_flat.get(name), int)
                and isinstance(new_flat.get(name), int) and new_flat[name] > old_flat[name]):
            continue
        names.append(name)
    return names


def run_config(workdir: str | os.PathLike) -> dict[str, Any]:
    """The config a run recorded in `workdir/config.json` (what train.py resolved), as a dict.

    Raises:
      ValueError: one line naming the file, when it is absent, unreadable or not a config
        (`stn.experiments.workdir.read_config`).
    """
    return workdir_lib.read_config(str(workdir))


def non_finite_fields(config: Mapping[str, Any]) -> list[str]:
    """Sorted dotted names of the float fields (or float items of list fields) of `config`
    that are NaN or infinite."""
    def bad(value) -> bool:
        if isinstance(value, (list, tuple)):
            return any(bad(v) for v in value)
        return isinstance(value, float) and not math.isfinite(value)
    return sorted(name for name, value in flatten(config).items() if bad(value))


def check_finite(config: Mapping[str, Any]) -> None:
    """Refuses (one-line ValueError naming the fields) a config with a NaN or infinite number:
    no field of any config means anything by one, and a NaN only shows up later as a
    'diverged' run."""
    fields = non_finite_fields(config)
    if fields:
        flat = flatten(config)
        shown = ", ".join(f"config.{name}={flat[name]}" for name in fields)
        raise ValueError(f"{shown}: every number of a config must be finite; set "
                         f"{'it' if len(fields) == 1 else 'them'} to a finite value")


def describe(old: Mapping[str, Any], new: Mapping[str, Any], fields: list[str],
             limit: int = 4) -> str:
    """`'seed 0 -> 1, train.learning_rate 0.5 -> 0.1'` for the first `limit` fields."""
    old_flat, new_flat = flatten(old), flatten(new)
    parts = [f"{name} {_shown(old_flat, name)} -> {_shown(new_flat, name)}"
             for name in fields[:limit]]
    more = len(fields) - len(parts)
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def _shown(flat: Mapping[str, Any], name: str) -> str:
    value = flat.get(name, _MISSING)
    return repr(value) if isinstance(value, str) else str(value)
