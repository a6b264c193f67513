"""`pip install .` also compiles the native CPU sampler (stn/native/sampler.cc) into the package.

The metadata is in pyproject.toml; this file only adds that build step. It needs a C++
compiler and jax's FFI headers: jax is looked for in the environment being installed into (the
interpreter pip runs under, outside its build isolation), then in the build's own Python. The
library is named as stn/native/build.py names it at run time (source, flags,
jax/jaxlib versions, CPU flags), so it is used only where it fits; anywhere else, or when this
step could not build it, it is built on first use. Without a compiler or jax the install goes on
and ONE line says so (pip shows it with -v): the pure-jnp sampler runs until a library exists.

pyproject.toml lists jax among the build requirements (unpinned, the runtime's lower bound), so
an isolated build of a fresh environment has headers too; jax's FFI headers are taken from the
environment being installed into where it already has jax (the library must match the jax that
will load it: its name carries the jax and jaxlib versions), else from the build environment's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
_JAX_INFO = ("import json, jax, jaxlib; "
             "print(json.dumps([jax.__version__, jaxlib.__version__, jax.ffi.include_dir()]))")


def _native_build_module():
    """stn/native/build.py, loaded on its own (importing the stn package would need jax)."""
    spec = importlib.util.spec_from_file_location("_stn_native_build",
                                                  HERE / "stn" / "native" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _target_jax() -> tuple[str, str, str] | None:
    """``(jax version, jaxlib version, FFI include folder)`` of the environment being installed
    into, else of pip's isolated build environment; None where neither has jax."""
    outside_isolation = {k: v for k, v in os.environ.items()
                         if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    for env in (outside_isolation, dict(os.environ)):  # the target's jax first, else the build's
        try:
            result = subprocess.run([sys.executable, "-c", _JAX_INFO], capture_output=True,
                                    text=True, env=env, timeout=300)
        except (OSError, subprocess.SubprocessError):
            continue
        if result.returncode == 0:
            return tuple(json.loads(result.stdout.strip().splitlines()[-1]))
    return None


def build_native_sampler(package_dir: Path) -> str:
    """Compiles the native sampler into ``package_dir`` (the built stn/native); one line saying
    what happened."""
    build = _native_build_module()
    compiler = build.find_compiler()
    if compiler is None:
        return "stn: no C++ compiler found; the native CPU sampler is not built (pure-jnp sampler)"
    info = _target_jax()
    if info is None:
        return "stn: jax is not installed yet; the native CPU sampler will be built on first use"
    jax_version, jaxlib_version, include_dir = info
    target = package_dir / build.library_name((jax_version, jaxlib_version))
    try:
        build.compile_library(compiler, include_dir, target)
    except build.BuildError as error:
        return f"stn: native CPU sampler not built ({error}); it is retried on first use"
    return f"stn: built the native CPU sampler {target.name} (jax {jax_version})"


class BuildPyWithNativeSampler(build_py):
    """``build_py``, then the native sampler's library into the built package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs the sources in place: built on first use
        package_dir = Path(self.build_lib) / "stn" / "native"
        package_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*package_dir.glob("stn_sampler-*.so"),  # from an earlier build in build/
                      *package_dir.glob("stn_sampler-*.json")]:
            stale.unlink()
        print(build_native_sampler(package_dir), file=sys.stderr)


class BinaryDistribution(Distribution):
    """The wheel may hold a compiled library: tag it for this platform, not as pure Python."""

    def has_ext_modules(self):
        return True


if __name__ == "__main__":  # as setuptools runs it (tests import the functions above)
    setup(cmdclass={"build_py": BuildPyWithNativeSampler}, distclass=BinaryDistribution)
