"""Compiles ``sampler.cc`` with the machine's C++ compiler the first time it is needed.

``pip install .`` builds it into the installed package (``setup.py``, when jax and a compiler
are found then; ``PREBUILT``), where it is used if its name matches; otherwise the library is
cached under ``$STN_NATIVE_CACHE`` (default ``$XDG_CACHE_HOME/stn/native``
or ``~/.cache/stn/native``; the temp dir when that is not writable), named by a hash of what the
binary must fit: the source, the flags, the jax/jaxlib versions (the FFI headers come from
``jax.ffi.include_dir()``) and the CPU's feature flags (it is built with ``-march=native``). A
changed source or a new jax therefore builds a new library. The compiler is not in the name, so
a machine without one (or with another one) at run time still finds a library built earlier;
delete the cache to rebuild with another compiler.

Beside each library a record ``<name>.json`` holds its size and SHA-256 (and the compiler that
built it); a library is loaded only if it still matches its record, so a truncated or damaged
file is rebuilt (or, without a compiler, skipped in one line) instead of crashing the process in
the loader. A build writes to temporary names in the cache folder (``.<pid>-<token>@<host>.tmp``)
and renames them into place, the record first, so two processes building at once both end with a
complete library, and a build killed midway leaves only a temporary file, which the next build
removes. A build at first use logs one line (logger ``stn.native``, shown by default) when it
starts and one when it is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("stn.native")

SOURCE = Path(__file__).with_name("sampler.cc")
PREBUILT = SOURCE.parent  # where setup.py puts the library it builds at install time
# No -ffast-math: it would drop the isfinite branch and reassociate the sums.
FLAGS = ("-std=c++17", "-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fPIC",
         "-shared")
COMPILERS = ("g++", "c++", "clang++")
COMPILE_TIMEOUT_S = 600
# A temporary file of a build in progress: <library stem>.<pid>-<token>@<host>.<so|json>.tmp
_TEMPORARY = re.compile(r"^stn_sampler-[0-9a-f]+\.(\d+)-[0-9a-f]+@(.+?)\.(so|json)\.tmp$")


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


def library_name(versions: tuple[str, str] | None = None) -> str:
    """``stn_sampler-<hash>.so``: the hash covers what the binary must fit (module docstring).

    ``versions`` is ``(jax, jaxlib)``; by default the running interpreter's.
    """
    jax_version, jaxlib_version = versions or jax_info()[:2]
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), jax_version.encode(),
                 jaxlib_version.encode(), _cpu_flags().encode()):
        digest.update(part)
        digest.update(b"\0")
    return f"stn_sampler-{digest.hexdigest()[:16]}.so"


def record_path(library: Path) -> Path:
    """The record beside ``library``: ``<name>.json``."""
    return library.with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_library(library: Path) -> str | None:
    """None where ``library`` has the size and SHA-256 recorded when it was built, else why not
    (a phrase completing "<path> ...")."""
    try:
        record = json.loads(record_path(library).read_text())
        size, sha256 = int(record["size"]), str(record["sha256"])
    except FileNotFoundError:
        return f"has no record of its size and hash ({record_path(library).name})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"has an unreadable record ({record_path(library).name})"
    actual = library.stat().st_size
    if actual != size:
        return f"is {actual} bytes, not the {size} recorded when it was built"
    if _sha256(library) != sha256:
        return "does not match the SHA-256 recorded when it was built"
    return None


def _temporary(target: Path, kind: str) -> Path:
    """A temporary name beside ``target`` that says which process on which host writes it."""
    host = socket.gethostname() or "localhost"
    return target.with_name(f"{target.stem}.{os.getpid()}-{secrets.token_hex(4)}@{host}.{kind}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Deletes the temporary files of builds that died (killed or crashed) in ``folder``: those
    of this host whose process is gone, and any older than twice the compile timeout."""
    host = socket.gethostname() or "localhost"
    for path in folder.glob("stn_sampler-*.tmp"):
        match = _TEMPORARY.match(path.name)
        try:
            old = time.time() - path.stat().st_mtime > 2 * COMPILE_TIMEOUT_S
            if old or (match and match.group(2) == host and not _alive(int(match.group(1)))):
                path.unlink()
        except OSError:
            pass  # gone already, or not ours to delete


def build() -> Path:
    """The path of a whole compiled library: the one installed with the package if its name
    matches, else the cache's, compiling it first where the cache has none or a damaged one.

    Raises BuildError (one line) when there is no compiler or compiling fails.
    """
    jax_version, jaxlib_version, include_dir = jax_info()
    name = library_name((jax_version, jaxlib_version))
    damaged = []
    for folder in (PREBUILT, None):
        path = (cache_dir() if folder is None else folder) / name
        if path.exists():
            problem = check_library(path)
            if problem is None:
                return path
            damaged.append(f"{path} {problem}")
    compiler = find_compiler()
    if compiler is None:
        raise BuildError("no C++ compiler found (set CXX, or install g++)"
                         + "".join(f"; {line}" for line in damaged))
    target = cache_dir() / name
    remove_stale_temporaries(target.parent)
    why = f" ({damaged[-1]})" if damaged else ""
    logger.warning("stn: building the native CPU sampler with %s (once; about a minute)%s",
                   os.path.basename(compiler), why)
    start = time.monotonic()
    compile_library(compiler, include_dir, target)
    logger.warning("stn: built the native CPU sampler in %.0f s: %s", time.monotonic() - start,
                   target)
    return target


def compile_library(compiler: str, include_dir: str, target: Path) -> Path:
    """Compiles ``SOURCE`` to ``target`` with the XLA FFI headers of ``include_dir`` and writes
    its record: both to temporary names in its folder, then renamed, the record first; BuildError
    (one line) if that fails."""
    temporary, record = _temporary(target, "so"), _temporary(target, "json")
    command = [compiler, *FLAGS, "-isystem", include_dir, str(SOURCE), "-o", str(temporary)]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=COMPILE_TIMEOUT_S)
        if result.returncode != 0 or not temporary.exists():
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BuildError(f"{os.path.basename(compiler)} failed: {last}")
        record.write_text(json.dumps({
            "size": temporary.stat().st_size, "sha256": _sha256(temporary),
            "compiler": compiler, "compiler_version": _compiler_version(compiler).strip()}))
        os.replace(record, record_path(target))
        os.replace(temporary, target)  # atomic: a concurrent build ends with a whole file too
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"{os.path.basename(compiler)} could not run: {error}") from error
    finally:
        for path in (temporary, record):
            if path.exists():
                path.unlink()
    return target
