"""A wrong `--config` flag ends train.py and eval.py in one line that names the flag, the file
or the field, and the nearest valid name where there is one (never a cut-off or escaped cause,
never a traceback)."""
import os
import subprocess
import sys
import textwrap

import pytest

from stn.experiments import config_args

from helpers import REPO

CASES = {  # the arguments -> what the one line must say
    "preset": (["--config=configs/mnist.py:quik"],
               ["--config=configs/mnist.py:quik", "unknown part 'quik'", "did you mean 'quick'?"]),
    "path": (["--config=configs/mnst.py"],
             ["--config=configs/mnst.py", "not found", "did you mean 'configs/mnist.py'?"]),
    "field": (["--config=configs/mnist.py:quick", "--config.train.learning_rat=0.1"],
              ["--config.train.learning_rat=0.1", "has no field train.learning_rat",
               "did you mean 'train.learning_rate'?"]),
    "value": (["--config=configs/mnist.py:quick", "--config.train.steps=abc"],
              ["--config.train.steps=abc", "config.train.steps takes an int", "got 'abc'"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("program", ["train.py", "eval.py"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_config_flag_is_one_line_naming_it(program, case, tmp_path):
    args, expected = CASES[case]
    proc = subprocess.run([sys.executable, program, *args, f"--workdir={tmp_path / 'run'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{program}: ")
    for part in expected:
        assert part in lines[0], lines[0]
    assert "\\" not in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_config_file_that_raises_names_its_line(tmp_path):
    config = tmp_path / "broken.py"
    config.write_text(textwrap.dedent("""
        def get_config(arg=None):
            steps = undefined_name
            return steps
    """))
    message = config_args.explain([f"--config={config}:x"])
    assert message == (f"--config={config}:x: {config}, line 3: NameError: name "
                       f"'undefined_name' is not defined")
    config.write_text("def get_config(arg=None)\n    return 1\n")
    assert config_args.explain([f"--config={config}"]).startswith(
        f"--config={config}: config file {config}, line 1: SyntaxError: ")


def test_a_missing_folder_and_a_misspelt_section(tmp_path):
    assert config_args.explain([f"--config={tmp_path / 'nowhere' / 'c.py'}"]) == (
        f"--config={tmp_path / 'nowhere' / 'c.py'}: config file "
        f"'{tmp_path / 'nowhere' / 'c.py'}' not found (no folder '{tmp_path / 'nowhere'}')")
    message = config_args.explain(["--config=configs/mnist.py:quick", "--config.trian.steps=5"])
    assert "has no field trian.steps; did you mean 'train.steps'?" in message


def test_parse_suggests_the_nearest_argument():
    with pytest.raises(ValueError, match=r"unknown argument 'seed'.*did you mean 'seeds'\?"):
        config_args.parse("seed=3", where="s.py", seeds=1)
    with pytest.raises(ValueError, match=r"unknown part 'qiuck'.*did you mean 'quick'\?"):
        config_args.parse("qiuck", where="c.py", choices={"preset": ("quick",)}, preset=None)
