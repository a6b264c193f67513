"""The library as a package: its metadata, the public API of every module (`__all__`), the flat
`stn.*` names, the harness's missing-extra message, and (slow) what a built wheel holds."""
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

import stn
from stn import backbones, boxes, kernels, layers, sampling, transforms, warps
from stn.backbones import inception_v3, seeded, timm_import

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBRARY = (sampling, transforms, kernels, boxes, layers, warps)  # the modules `stn.*` draws from
PUBLIC = LIBRARY + (backbones, inception_v3, timm_import, seeded)


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_distribution_name_version_and_license():
    project = _pyproject()
    assert project["project"]["name"] == "stn-jax"  # `stn` on PyPI is another project
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "stn.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", stn.__version__)
    assert project["project"]["license"] == "Apache-2.0"
    assert project["project"]["license-files"] == ["LICENSE"]
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a line naming it
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["stn"]
    assert os.path.isfile(os.path.join(ROOT, "stn", "py.typed"))


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_all_lists_resolve_to_documented_objects_of_the_module(module):
    names = module.__all__
    assert len(names) == len(set(names)), "a name repeats in __all__"
    for name in names:
        value = getattr(module, name)  # AttributeError: __all__ names a missing object
        if inspect.isfunction(value) or inspect.isclass(value):
            assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"
            assert value.__module__.startswith("stn"), f"{name} comes from {value.__module__}"
        elif inspect.ismodule(value):
            assert value.__name__ == f"{module.__name__}.{name}"


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_star_import_gives_the_api_not_the_modules_it_uses(module):
    namespace = {}
    exec(f"from {module.__name__} import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(module.__all__)
    assert not {"jax", "jnp", "np", "math", "nnx", "annotations"} & set(namespace)


def test_flat_names_are_the_module_objects():
    owners = {}
    for module in LIBRARY:
        for name in module.__all__:
            owners.setdefault(name, []).append(module)
    assert len(stn.__all__) == len(set(stn.__all__))
    for name in stn.__all__:
        assert len(owners.get(name, [])) == 1, f"stn.{name} is in {owners.get(name)}"
        assert getattr(stn, name) is getattr(owners[name][0], name)
    for name in ("sample", "affine_grid", "SpatialTransformer", "Keys", "iou", "Transform"):
        assert name in stn.__all__
    # dir(stn) shows the API and the submodules, nothing they import.
    public = {name for name in dir(stn) if not name.startswith("_")}
    submodules = {name for name in public if inspect.ismodule(getattr(stn, name))}
    assert public - submodules == set(stn.__all__)
    assert {"boxes", "kernels", "layers", "sampling", "transforms"} <= submodules


def test_import_stn_loads_neither_the_harness_nor_its_extra():
    # (optax and orbax come with flax itself.)
    script = ("import sys, stn; print(sorted(m for m in sys.modules if m.startswith(("
              "'stn.experiments', 'ml_collections', 'matplotlib', 'PIL', 'tensorflow_datasets'))))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if pillow were not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "stn.experiments", raising=False)
    with pytest.raises(ModuleNotFoundError) as error:
        importlib.import_module("stn.experiments")
    message = str(error.value)
    assert "\n" not in message
    assert 'pip install "stn-jax[experiments]"' in message
    assert "missing: PIL, matplotlib" in message


def test_the_extras_check_names_distributions_of_the_extra():
    from stn import experiments

    extra = {_requirement_name(r) for r in _pyproject()["project"]["optional-dependencies"][
        "experiments"]}
    assert set(experiments.EXTRA_MODULES.values()) <= extra
    assert experiments.missing_extra() == []  # the test environment has the extra


def _setuptools_version() -> tuple[int, ...]:
    import setuptools

    return tuple(int(part) for part in re.findall(r"\d+", setuptools.__version__)[:2])


@pytest.mark.slow
def test_wheel_holds_the_package_license_and_py_typed(tmp_path):
    """`pip wheel` of a copy of the sources (offline: this interpreter's setuptools)."""
    if _setuptools_version() < (77, 0):
        pytest.skip("building offline needs setuptools >= 77 (PEP 639 license-files) here")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(os.path.join(ROOT, "stn"), source / "stn",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(tmp_path / "wheels"), str(source)],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("stn_jax-*.whl")
    assert wheel.name.startswith(f"stn_jax-{stn.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"stn_jax-{stn.__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
    assert {"stn/__init__.py", "stn/py.typed", "stn/sampling.py", "stn/native/sampler.cc",
            f"{info}/licenses/LICENSE"} <= names
    assert "Name: stn-jax" in metadata and f"Version: {stn.__version__}" in metadata
    assert "License-Expression: Apache-2.0" in metadata
