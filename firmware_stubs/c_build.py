"""Build the C firmware programs of ``firmware_stubs/c/`` with the system compiler, cached.

``build("hil_quad_pid")`` returns the path of a binary compiled from the C sources with
``$CC`` (default ``cc``) and warnings as errors. Binaries live in
``hil.jaxconfig.cache_directory().parent / "firmware"`` under a name that carries a hash of
everything that goes into them (every source and header, the compiler's command and resolved
path, the flags), so a binary is rebuilt only when one of those changes. A build writes a
temporary file and renames it into place, so concurrent builds of the same target are safe:
the last rename wins and every rename installs a complete binary.
"""

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from hil import jaxconfig

SOURCE_DIR = Path(__file__).resolve().parent / "c"
FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")
LIBRARIES = ("-lm",)

# The C files of each program; every header in SOURCE_DIR goes into the hash as well.
TARGETS = {
    "hil_quad_pid": ("hil_proto.c", "quad_pid.c", "firmware_quad_pid.c", "main_posix.c"),
    "hil_open_loop": ("hil_proto.c", "open_loop.c", "main_posix.c"),
    "test_vectors": ("hil_proto.c", "test_vectors.c"),
    "quad_pid_replay": ("quad_pid.c", "quad_pid_replay.c"),
}


def cache_directory() -> Path:
    return jaxconfig.cache_directory().parent / "firmware"


def compiler() -> list[str]:
    """The compiler command: ``$CC`` split as a shell would, else ``cc``."""
    return shlex.split(os.environ.get("CC") or "cc")


def _key(target: str, command: list[str], resolved: str, flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256()

    def add(label: str, data: bytes):
        digest.update(label.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    add("target", target.encode())
    add("compiler", "\0".join(command).encode())
    add("resolved", resolved.encode())
    add("flags", "\0".join(flags).encode())
    for path in sorted(SOURCE_DIR.glob("*.h")) + [SOURCE_DIR / name for name in TARGETS[target]]:
        add(path.name, path.read_bytes())
    return digest.hexdigest()[:20]


def build(target: str = "hil_quad_pid", extra_flags: tuple[str, ...] = ()) -> Path:
    """The path of ``target``'s binary, compiled now unless an up-to-date one is cached.

    ``extra_flags`` (for example sanitizers) are added after :data:`FLAGS` and are part of the
    cache key. Raises :class:`RuntimeError` naming the compiler and quoting its output when
    there is no compiler or compilation fails.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown C firmware target {target!r}; known: {', '.join(sorted(TARGETS))}")
    command = compiler()
    if not command:
        raise RuntimeError("no C compiler: $CC is set but empty")
    resolved = shutil.which(command[0])
    if resolved is None:
        raise RuntimeError(f"no C compiler: {command[0]!r} was not found (set $CC to a C99 compiler, e.g. CC=gcc)")
    resolved = os.path.realpath(resolved)
    flags = FLAGS + tuple(extra_flags)
    missing = [name for name in TARGETS[target] if not (SOURCE_DIR / name).is_file()]
    if missing:
        raise RuntimeError(f"the C sources of {target} are incomplete: {', '.join(missing)} not in {SOURCE_DIR}")

    directory = cache_directory()
    binary = directory / f"{target}-{_key(target, command, resolved, flags)}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    directory.mkdir(parents=True, exist_ok=True)

    handle, temporary = tempfile.mkstemp(prefix=f".{target}-", suffix=".tmp", dir=directory)
    os.close(handle)
    argv = [*command, *flags, "-I", str(SOURCE_DIR), "-o", temporary,
            *(str(SOURCE_DIR / name) for name in TARGETS[target]), *LIBRARIES]
    try:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        except OSError as error:
            raise RuntimeError(f"cannot run the C compiler {command[0]!r} ({resolved}): {error}") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the C compiler {command[0]!r} took more than 300 s building {target}") from None
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            raise RuntimeError(f"compiling {target} failed: {shlex.join(argv)} exited with status "
                               f"{result.returncode}; compiler output:\n{output or '(none)'}")
        if not os.path.isfile(temporary) or os.path.getsize(temporary) == 0:
            raise RuntimeError(f"compiling {target}: {shlex.join(argv)} succeeded but wrote no binary; compiler "
                               f"output:\n{output or '(none)'}")
        os.chmod(temporary, 0o755)
        os.replace(temporary, binary)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return binary


def build_test_vectors() -> Path:
    """The ``test_vectors`` program: hil_proto driven from stdin (see c/test_vectors.c)."""
    return build("test_vectors")
