"""Build the C firmware programs of ``firmware_stubs/c/`` with the system compiler, cached; the
STM32F405 board image of ``firmware_stubs/board/`` with the ARM cross-compiler
(:func:`build_board`); and hil's own native parts, XLA FFI calls (:func:`build_ffi_library`): the
lockstep exchange, which uses hil_proto.c, and quad_pid.c flown inside a sweep's tick.

``build("hil_quad_pid")`` returns the path of a binary compiled from the C sources with
``$CC`` (default ``cc``) and warnings as errors. Binaries live in ``firmware/`` of hil's private
cache directory (:func:`hil.jaxconfig.cache_directory`) under a name that carries a hash of
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
CXX_FLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC")

# The C files of each program; every header in SOURCE_DIR goes into the hash as well.
TARGETS = {
    "hil_quad_pid": ("hil_proto.c", "hil_firmware.c", "quad_pid.c", "firmware_quad_pid.c", "main_posix.c"),
    "hil_open_loop": ("hil_proto.c", "hil_firmware.c", "open_loop.c", "main_posix.c"),
    "test_vectors": ("hil_proto.c", "test_vectors.c"),
    "quad_pid_replay": ("hil_proto.c", "hil_firmware.c", "quad_pid.c", "quad_pid_replay.c"),
}


def cache_directory() -> Path:
    """Raises :class:`hil.jaxconfig.CacheDirectoryError` (a RuntimeError) for a cache others could write."""
    return jaxconfig.cache_directory("firmware")


def compiler(variable: str = "CC", default: str = "cc") -> list[str]:
    """The compiler command: ``$CC`` (or another variable) split as a shell would, else ``default``."""
    return shlex.split(os.environ.get(variable) or default)


def _resolved(command: list[str], language: str, variable: str, example: str) -> str:
    """The compiler's real path; raises RuntimeError saying what to set when there is none."""
    if not command:
        raise RuntimeError(f"no {language} compiler: ${variable} is set but empty")
    resolved = shutil.which(command[0])
    if resolved is None:
        raise RuntimeError(f"no {language} compiler: {command[0]!r} was not found (set ${variable} to a "
                           f"{language} compiler, e.g. {variable}={example})")
    return os.path.realpath(resolved)


def _key(target: str, parts: list[tuple[str, bytes]], sources: list[Path]) -> str:
    digest = hashlib.sha256()

    def add(label: str, data: bytes):
        digest.update(label.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    add("target", target.encode())
    for label, data in parts:
        add(label, data)
    for path in sorted(SOURCE_DIR.glob("*.h")) + sources:
        add(path.name, path.read_bytes())
    return digest.hexdigest()[:20]


def _cached(target: str, key: str, steps) -> Path:
    """``target`` under ``key`` in the cache, built now by ``steps(output, scratch)`` (a list of
    argv lists, run in order, the last writing ``output``) unless it is there already."""
    directory = cache_directory()
    product = directory / f"{target}-{key}"
    if product.is_file() and os.access(product, os.X_OK):
        return product
    scratch = Path(tempfile.mkdtemp(prefix=f".{target}-", dir=directory))
    temporary = scratch / "product"
    try:
        for argv in steps(temporary, scratch):
            try:
                result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            except OSError as error:
                raise RuntimeError(f"cannot run the compiler {argv[0]!r}: {error}") from None
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"the compiler {argv[0]!r} took more than 300 s building {target}") from None
            output = (result.stdout + result.stderr).strip()
            if result.returncode != 0:
                raise RuntimeError(f"compiling {target} failed: {shlex.join(argv)} exited with status "
                                   f"{result.returncode}; compiler output:\n{output or '(none)'}")
        if not temporary.is_file() or temporary.stat().st_size == 0:
            raise RuntimeError(f"compiling {target}: {shlex.join(argv)} succeeded but wrote nothing; compiler "
                               f"output:\n{output or '(none)'}")
        os.chmod(temporary, 0o755)
        os.replace(temporary, product)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return product


def build(target: str = "hil_quad_pid", extra_flags: tuple[str, ...] = ()) -> Path:
    """The path of ``target``'s binary, compiled now unless an up-to-date one is cached.

    ``extra_flags`` (for example sanitizers) are added after :data:`FLAGS` and are part of the
    cache key. Raises :class:`RuntimeError` naming the compiler and quoting its output when
    there is no compiler or compilation fails.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown C firmware target {target!r}; known: {', '.join(sorted(TARGETS))}")
    command = compiler()
    resolved = _resolved(command, "C", "CC", "gcc")
    flags = FLAGS + tuple(extra_flags)
    missing = [name for name in TARGETS[target] if not (SOURCE_DIR / name).is_file()]
    if missing:
        raise RuntimeError(f"the C sources of {target} are incomplete: {', '.join(missing)} not in {SOURCE_DIR}")
    sources = [SOURCE_DIR / name for name in TARGETS[target]]
    key = _key(target, [("compiler", "\0".join(command).encode()), ("resolved", resolved.encode()),
                        ("flags", "\0".join(flags).encode())], sources)
    return _cached(target, key, lambda output, _: [
        [*command, *flags, "-I", str(SOURCE_DIR), "-o", str(output), *map(str, sources), *LIBRARIES]])


def build_ffi_library(target: str, source: Path, include: Path, include_version: str,
                      c_sources: tuple[str, ...] = ("hil_proto.c",)) -> Path:
    """A shared library of one C++ XLA FFI handler (``source``) linked with C files of ``c/``
    (``c_sources``: hil_proto.c for the lockstep exchange, quad_pid.c for the controller flown
    in a sweep).

    The C files are compiled as C99 with ``$CC`` and :data:`FLAGS` (the flags the firmware
    programs are built with, so the same code computes the same bits), the handler as C++17 with
    ``$CXX`` (default ``c++``), warnings as errors for both; ``include`` (XLA's FFI headers, of
    ``include_version``) is a system include directory, so its own warnings do not count.
    """
    c_command, cxx_command = compiler(), compiler("CXX", "c++")
    c_resolved, cxx_resolved = _resolved(c_command, "C", "CC", "gcc"), _resolved(cxx_command, "C++", "CXX", "g++")
    c_flags = FLAGS + ("-fPIC",)
    c_paths = [SOURCE_DIR / name for name in c_sources]
    key = _key(target, [("c", "\0".join([*c_command, c_resolved, *c_flags]).encode()),
                        ("c++", "\0".join([*cxx_command, cxx_resolved, *CXX_FLAGS]).encode()),
                        ("include", f"{include}\0{include_version}".encode())], [*c_paths, source])

    def steps(output: Path, scratch: Path):
        objects = [scratch / f"{path.stem}.o" for path in c_paths]
        return [*([*c_command, *c_flags, "-c", "-I", str(SOURCE_DIR), "-o", str(obj), str(path)]
                  for path, obj in zip(c_paths, objects)),
                [*cxx_command, *CXX_FLAGS, "-shared", "-isystem", str(include), "-I", str(SOURCE_DIR),
                 "-o", str(output), str(source), *map(str, objects), *LIBRARIES]]

    return _cached(target, key, steps)


BOARD_DIR = Path(__file__).resolve().parent / "board"
CROSS_COMPILER = "arm-none-eabi-gcc"
CROSS_INSTALL = ("apt-get install -y --no-install-recommends gcc-arm-none-eabi picolibc-arm-none-eabi "
                 "qemu-system-arm")
# The STM32F405: a Cortex-M4 with a single-precision FPU; its flash and SRAM (CCM RAM left unused).
CROSS_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "--specs=picolibc.specs")
BOARD_MEMORY = ("-Wl,--defsym=__flash=0x08000000", "-Wl,--defsym=__flash_size=0x100000",
                "-Wl,--defsym=__ram=0x20000000", "-Wl,--defsym=__ram_size=0x20000",
                "-Wl,--defsym=__stack_size=0x2000")
BOARD_SOURCES = ("startup.c", "usart.c", "board_main.c")
BOARD_C_SOURCES = ("hil_proto.c", "hil_firmware.c", "quad_pid.c", "firmware_quad_pid.c")
# The controller's arithmetic in an image: the F405's FPU does float32 in hardware, float64 in software
# (a float32 build that slips into double anywhere fails to compile: -Wdouble-promotion, -Werror).
PRECISIONS = {"float64": (), "float32": ("-DQUAD_PID_FLOAT32", "-Wdouble-promotion")}


def build_board(precision: str = "float64") -> Path:
    """The STM32F405 image (an ELF, which QEMU's ``-kernel`` and a debug probe both load) of the
    board firmware: one image for every scenario (hil sends it the controller's parameters after
    HELLO), cached under a hash of every source, the cross-compiler and the flags. ``precision`` (a key of
    :data:`PRECISIONS`) is the controller's arithmetic. Raises RuntimeError with the install line
    when the cross toolchain is missing."""
    if precision not in PRECISIONS:
        raise ValueError(f"no board build in {precision!r}; give one of {', '.join(PRECISIONS)}")
    command = compiler("CROSS_CC", CROSS_COMPILER)
    found = shutil.which(command[0])
    if found is None:
        raise RuntimeError(f"no cross-compiler for the STM32F405 board: {command[0]!r} was not found; on Debian "
                           f"or Ubuntu: {CROSS_INSTALL}")
    resolved = os.path.realpath(found)
    flags = FLAGS + CROSS_FLAGS + PRECISIONS[precision]
    sources = [BOARD_DIR / name for name in BOARD_SOURCES] + [SOURCE_DIR / name for name in BOARD_C_SOURCES]
    key = _key("board_stm32f405", [("compiler", "\0".join(command).encode()), ("resolved", resolved.encode()),
                                   ("flags", "\0".join(flags + BOARD_MEMORY).encode())],
               sorted(BOARD_DIR.glob("*.h")) + sources)

    def steps(output: Path, scratch: Path):
        return [[*command, *flags, *BOARD_MEMORY, "-I", str(BOARD_DIR), "-I", str(SOURCE_DIR),
                 "-o", str(output), *map(str, sources), "-lm"]]

    try:
        return _cached("board_stm32f405", key, steps)
    except RuntimeError as error:
        if "picolibc" not in str(error):
            raise
        raise RuntimeError(f"{error}\npicolibc for arm-none-eabi is missing; on Debian or Ubuntu: {CROSS_INSTALL}") \
            from None


def build_test_vectors() -> Path:
    """The ``test_vectors`` program: hil_proto driven from stdin (see c/test_vectors.c)."""
    return build("test_vectors")
