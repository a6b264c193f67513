"""Compiles ``sampler.cc`` with the machine's C++ compiler the first time it is needed.

``pip install .`` builds it into the installed package (``setup.py``, when jax and a compiler
are found then; ``PREBUILT``), where it is used if its name matches; otherwise the library is
cached under ``$STN_NATIVE_CACHE`` (default ``$XDG_CACHE_HOME/stn/native``
or ``~/.cache/stn/native``; the temp dir when that is not writable), named by a hash of the
source, the compiler command and version, the jax/jaxlib versions (the FFI headers come from
``jax.ffi.include_dir()``) and the CPU's feature flags (it is built with ``-march=native``). A
changed source or a new jax therefore builds a new library. Each build writes to a temporary
name in the cache folder and renames it into place, so two processes building at once both end
with a complete library.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("sampler.cc")
PREBUILT = SOURCE.parent  # where setup.py puts the library it builds at install time
# No -ffast-math: it would drop the isfinite branch and reassociate the sums.
FLAGS = ("-std=c++17", "-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fPIC",
         "-shared")
COMPILERS = ("g++", "c++", "clang++")


class BuildError(RuntimeError):
    """The native sampler could not be compiled (no compiler, or the compiler failed)."""


def find_compiler() -> str | None:
    """``$CXX`` if set, else the first of ``COMPILERS`` on the PATH; None if there is none."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    for name in COMPILERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_dir() -> Path:
    """Where built libraries live (created if needed); see the module docstring."""
    if os.environ.get("STN_NATIVE_CACHE"):
        candidates = [Path(os.environ["STN_NATIVE_CACHE"])]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(base) / "stn" / "native"]
    candidates.append(Path(tempfile.gettempdir()) / f"stn-native-{os.getuid()}")
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise BuildError(f"no writable cache folder among {[str(c) for c in candidates]}")


def _cpu_flags() -> str:
    """The CPU's feature flags (what -march=native depends on), or the machine name."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine()


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def jax_info() -> tuple[str, str, str]:
    """``(jax version, jaxlib version, FFI include folder)`` of the running interpreter's jax."""
    import jax
    import jaxlib

    return jax.__version__, jaxlib.__version__, jax.ffi.include_dir()


def library_name(compiler: str, versions: tuple[str, str] | None = None) -> str:
    """``stn_sampler-<hash>.so``: the hash covers everything that changes the binary.

    ``versions`` is ``(jax, jaxlib)``; by default the running interpreter's.
    """
    jax_version, jaxlib_version = versions or jax_info()[:2]
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), _compiler_version(compiler).encode(),
                 " ".join(FLAGS).encode(), jax_version.encode(), jaxlib_version.encode(),
                 _cpu_flags().encode()):
        digest.update(part)
        digest.update(b"\0")
    return f"stn_sampler-{digest.hexdigest()[:16]}.so"


def build() -> Path:
    """The path of the compiled library: the one installed with the package if its name
    matches, else the cache's, compiling it first if the cache has none.

    Raises BuildError (one line) when there is no compiler or compiling fails.
    """
    compiler = find_compiler()
    if compiler is None:
        raise BuildError("no C++ compiler found (set CXX, or install g++)")
    jax_version, jaxlib_version, include_dir = jax_info()
    name = library_name(compiler, (jax_version, jaxlib_version))
    if (PREBUILT / name).exists():
        return PREBUILT / name
    target = cache_dir() / name
    if target.exists():
        return target
    return compile_library(compiler, include_dir, target)


def compile_library(compiler: str, include_dir: str, target: Path) -> Path:
    """Compiles ``SOURCE`` to ``target`` (a temporary name in its folder, then renamed), with
    the XLA FFI headers of ``include_dir``; BuildError (one line) if that fails."""
    fd, temporary = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    command = [compiler, *FLAGS, "-isystem", include_dir, str(SOURCE), "-o", temporary]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BuildError(f"{os.path.basename(compiler)} failed: {last}")
        os.replace(temporary, target)  # atomic: a concurrent build ends with a whole file too
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"{os.path.basename(compiler)} could not run: {error}") from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target
