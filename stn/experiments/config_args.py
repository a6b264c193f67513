"""Config and sweep files on the command line: the parser of their `arg`, their loading, and
one-line errors for every way a `--config` flag can be wrong.

`parse` reads the `arg` of config files (`configs/mnist.py:rts,st_cnn`) and sweep files
(`configs/sweeps/lr_seed.py:lrs=0.01,0.03,seeds=3`).

An argument is comma-separated pieces:
- a bare word from one of the named `choices` groups picks that group's value
  (`rts` -> `distortion="rts"`; `distortion=rts` says the same);
- `key=value` sets a key, typed like its default (bool, int, float, str); a list or tuple default
  makes it a list (`lrs=0.01,0.03`);
- any other bare piece continues the previous `key=value` (list items, or commas inside a string
  value such as `config=configs/mnist.py:rts,st_cnn`).
Every mistake is a one-line ValueError naming what is accepted (and the nearest word).

`load_file` imports a config or sweep file by its path; `explain` turns a failed `--config=...`
/ `--config.KEY=VALUE` parse into one line naming the flag, the file or the field, with the
nearest valid name (what `train.py`, `eval.py` and the sweep runner print).
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections


def parse(arg: str | None, *, where: str, choices: Mapping[str, Sequence[str]] | None = None,
          **defaults: Any) -> dict[str, Any]:
    """Parses `arg` into `{key: value}` for every choice group and default (see module doc).

    Args:
      arg: the text after the file's `:` (None or empty: all defaults).
      where: what the argument belongs to, for messages (e.g. "configs/mnist.py").
      choices: group name -> the words it accepts; a group's default is `defaults[group]`.
      **defaults: every key's default value; choice groups need one too.
    """
    choices = dict(choices or {})
    group_of = {word: group for group, words in choices.items() for word in words}
    raw: dict[str, list[str]] = {}
    picked: dict[str, str] = {}
    last = None
    for piece in (arg or "").split(","):
        word = piece.strip()
        if not word:
            continue
        if "=" in word:
            last, value = (part.strip() for part in word.split("=", 1))
            if last in choices:  # `group=word` picks like the bare word
                if value.lower() not in choices[last]:
                    raise ValueError(f"{where}: {last}={value!r}; expected one of "
                                     f"{', '.join(choices[last])}")
                picked[last], last = value.lower(), None
                continue
            if last not in defaults:
                raise ValueError(f"{where}: unknown argument {last!r}; expected "
                                 f"{_accepted(choices, defaults)}"
                                 f"{did_you_mean(last, [k for k in defaults if k not in choices])}")
            raw[last] = [value]
        elif word.lower() in group_of:
            picked[group_of[word.lower()]] = word.lower()
        elif last is not None:
            raw[last].append(word)
        else:
            raise ValueError(f"{where}: unknown part {word!r} in {arg!r}; expected "
                             f"{_accepted(choices, defaults)}{did_you_mean(word, group_of)}")
    out = dict(defaults)
    out.update(picked)
    for key, pieces in raw.items():
        out[key] = _typed(where, key, pieces, defaults[key])
    return out


def _accepted(choices: Mapping[str, Sequence[str]], defaults: Mapping[str, Any]) -> str:
    groups = [f"{group} ({', '.join(words)})" for group, words in choices.items()]
    keys = sorted(k for k in defaults if k not in choices)
    if keys:
        groups.append(f"key=value for {', '.join(keys)}")
    return "; ".join(groups) or "nothing"


def _typed(where: str, key: str, pieces: list[str], default: Any) -> Any:
    """The raw pieces of one argument converted to the type of its default."""
    if isinstance(default, (list, tuple)):
        kind = type(default[0]) if default else str
        return [_scalar(where, key, p, kind) for p in pieces]
    text = ",".join(pieces)
    return text if default is None else _scalar(where, key, text, type(default))


def _scalar(where: str, key: str, text: str, kind: type) -> Any:
    """One value of type `kind` from text, with a one-line error naming the key."""
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return kind(text)
    except ValueError:
        raise ValueError(f"{where}: {key}={text!r}: expected a {kind.__name__}") from None


# --------------------------------------------------------------------------------------------
# Loading config and sweep files, and saying in one line what is wrong with a --config flag.


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """`"; did you mean 'quick'?"` for the name of `names` nearest to `word` (difflib), else ""."""
    close = difflib.get_close_matches(word, [str(n) for n in names], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def located(error: BaseException, path: str | os.PathLike) -> str:
    """`"PATH, line N: TypeName: message"` for an error raised while running the Python file
    at `path`: the line is the innermost one of that file in the traceback (a syntax error's
    own file and line)."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}, line {error.lineno}: SyntaxError: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    target = os.path.realpath(path)
    own = [f for f in frames if os.path.realpath(f.filename) == target] or frames[-1:]
    where = f"{own[-1].filename}, line {own[-1].lineno}" if own else str(path)
    return f"{where}: {type(error).__name__}: {_message_line(error)}"


def load_file(path: str | os.PathLike, what: str = "file") -> Any:
    """The Python file at `path`, imported as a module (config and sweep files are files, not
    packages). A missing file, a syntax error or an exception while it runs is one ValueError
    line naming the file (with the nearest existing name, or the line and the error)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} not found{_nearest_file(path)}")
    spec = importlib.util.spec_from_file_location(f"_stn_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken file: where, and what, in one line
        raise ValueError(f"{what} {located(e, path)}") from None
    return module


def _nearest_file(path: Path) -> str:
    """`"; did you mean 'configs/mnist.py'?"` for a misspelt file in an existing folder."""
    if not path.parent.is_dir():
        return f" (no folder {str(path.parent)!r})"
    names = [p.name for p in path.parent.iterdir() if p.suffix == ".py"]
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f"; did you mean {str(path.with_name(close[0]))!r}?" if close else ""


def load_config(spec: str, flag: str = "config") -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file `spec` (`path.py[:arg]`, split at the first `:` as
    ml_collections does), every failure one ValueError line naming `--FLAG=SPEC`."""
    path, has_arg, arg = spec.partition(":")
    try:
        module = load_file(path, "config file")
        if not hasattr(module, "get_config"):
            raise ValueError(f"{path} defines no get_config(arg=None)")
        return module.get_config(arg) if has_arg else module.get_config()
    except ValueError as e:
        message = _message_line(e)
        if message.startswith(f"{path}: "):  # parse's errors name the file already
            message = message[len(path) + 2:]
        raise ValueError(f"--{flag}={spec}: {message}") from None
    except Exception as e:  # get_config itself failed
        raise ValueError(f"--{flag}={spec}: {located(e, path)}") from None


def explain(argv: Sequence[str], error: BaseException | None = None, flag: str = "config") -> str:
    """One line saying which `--FLAG=SPEC` or `--FLAG.KEY=VALUE` of `argv` fails and why.

    Used once ml_collections' config flag has failed (its own messages cut the cause, or wrap a
    traceback): the config file is loaded again, then each override checked alone against it
    (an unknown field names the nearest one; a value that does not parse names the field's
    type). Returns the first line of `error` when every piece passes on its own.
    """
    specs = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")]
    fallback = _message_line(error) if error is not None else "the config flags do not parse"
    if not specs:
        return fallback
    spec = specs[-1]
    try:
        config = load_config(spec, flag)
        flat = _flat_fields(config)
        for arg in argv:
            _check_override(arg, spec, config, flat, flag)
    except ValueError as e:
        return str(e)
    return fallback


def _check_override(arg: str, spec: str, config: ml_collections.ConfigDict,
                    flat: Mapping[str, Any], flag: str) -> None:
    """Raise a one-line ValueError if the override `arg` names no field of `config` or its
    value does not parse as that field's type (parsed by ml_collections itself)."""
    name = arg.split("=", 1)[0].lstrip("-")
    if name.startswith(f"no{flag}."):  # --noconfig.FIELD sets a bool field to False
        name = name[2:]
    if not name.startswith(f"{flag}."):
        return
    key = name[len(flag) + 1:]
    if key not in flat and not any(k.startswith(key + ".") for k in flat):
        raise ValueError(f"{arg}: {spec} has no field {key}{_nearest_field(key, flat)}")
    try:
        _parse_flags(["check", f"--{flag}={spec}", arg], flag)
    except Exception as e:  # absl wraps the parser's error; its cause names the value
        value, given = flat.get(key), arg.split("=", 1)[1] if "=" in arg else "(no value)"
        if value is None:
            raise ValueError(f"{arg}: {_message_line(e.__cause__ or e)}") from None
        kind = type(value).__name__
        raise ValueError(f"{arg}: {flag}.{key} takes a{'n' if kind[0] in 'aeiou' else ''} "
                         f"{kind} ({spec} sets {value!r}), got {given!r}") from None


def _nearest_field(key: str, flat: Mapping[str, Any]) -> str:
    """The nearest field to a misspelt dotted `key`: among its siblings when its section exists
    (`train.nope` is no near miss of `train.optimizer`), else among every dotted name."""
    section, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in flat if k.rpartition(".")[0] == section}
    if section and siblings:
        close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
        return f"; did you mean {siblings[close[0]]!r}?" if close else ""
    return did_you_mean(key, flat)


def _parse_flags(argv: Sequence[str], flag: str) -> ml_collections.ConfigDict:
    """`argv` parsed by a private ml_collections config flag, as train.py parses its own."""
    from absl import flags
    from ml_collections import config_flags
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(flag, None, "config file", flag_values=values,
                                    lock_config=True, sys_argv=list(argv))
    values(list(argv))
    return getattr(values, flag)


def _flat_fields(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> value of every leaf of `config` (nested ConfigDicts and dicts)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            flat.update(_flat_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _message_line(error: BaseException) -> str:
    """The informative line of an error: the last non-empty line when a traceback is wrapped
    into its message (ml_collections does), else its only one."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_sections(**train: Any) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """The `train` and `eval` sections every config has, with the trainer's defaults.

    Keyword arguments set `train.*` fields, and `eval_batch_size` sets `eval.batch_size`;
    `steps`, `batch_size`, `learning_rate` and `lr_decay_every` are required (they are each
    experiment's recipe). Having every field in every config lets the command line override it.
    """
    missing = {"steps", "batch_size", "learning_rate", "lr_decay_every"} - set(train)
    if missing:
        raise TypeError(f"run_sections needs {', '.join(sorted(missing))}")
    evaluation = ml_collections.ConfigDict({
        "batch_size": train.pop("eval_batch_size", 500),
        "test_during_training": False,  # True: the test set too at every evaluation
    })
    fields = {
        "optimizer": "sgd",  # or "adam" (stn.experiments.training.base_optimizer)
        "momentum": 0.0, "weight_decay": 0.0,
        "grad_clip_norm": 0.0,  # > 0: rescale the gradient to at most this global norm
        "lr_decay_factor": 0.1,  # the lr is multiplied by it every lr_decay_every steps
        "loss_limit": 1e4,  # a larger (finite) training loss stops the run as diverged
        "log_every": 100, "eval_every": 10_000, "checkpoint_every": 5_000, "keep_checkpoints": 3,
        "num_images": 16,  # test inputs in the picture at each evaluation
        "max_steps_in_flight": 0,  # 0: 50 on a GPU/TPU, 1 on the CPU
    }
    unknown = set(train) - set(fields) - missing - {"steps", "batch_size", "learning_rate",
                                                    "lr_decay_every"}
    if unknown:
        raise TypeError(f"run_sections got unknown train fields {sorted(unknown)}")
    fields.update(train)
    return ml_collections.ConfigDict(fields), evaluation
