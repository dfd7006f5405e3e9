"""JAX's process-wide settings that every traced function in hil relies on, and hil's cache directory.

Importing hil changes nothing in JAX: a program of your own that imports hil keeps its own
settings. hil's entry points (``hil`` on the command line, the emulated firmware's process,
:class:`hil.sim.Simulation`, the tests and the benches) call :func:`configure`, which sets:

- float64 everywhere: the physics is checked against a reference integrator to 1e-6 m.
- synchronous CPU dispatch: a tick loop makes one small call at a time, and asynchronous
  dispatch costs ~100 µs per call there for no overlap gained.
- XLA's CPU scheduler without thread hand-offs between tiny kernels;
- one CPU device per core this process may run on, so that ``hil sweep`` splits its members over
  the cores (one program a device); a program on one device, as every single run's, runs as before;
- the persistent compilation cache, so a warm start skips XLA compilation, in ``jax/`` of hil's
  cache directory: ``$HIL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/hil`` (``~/.cache/hil``).
  Every cached artefact (``jax/``, ``ticks/``, ``firmware/``) lives there, in folders only their
  owner can enter: hil loads and runs what it finds there.
- threefry lowered as straight-line code on CPU (:func:`_unroll_threefry_on_cpu`);
- the persistent cache's key without the CPU device, so that the sweep's devices share one
  compilation (:func:`_one_cache_entry_for_every_cpu_device`).

A sweep's program is compiled with :func:`compiled`, which adds XLA options of its own
(:data:`COMPILER_OPTIONS`) to that program alone.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jax

# XLA's concurrency-optimised scheduler spreads a tick's few dozen tiny kernels over threads, and
# the hand-offs cost more than the kernels (~30 % of a tick).
_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)

# XLA's elemental CPU fusion emitter, not its MLIR fusion emitters, for a sweep's program: its
# few hundred small kernels compile in about 30 % less CPU time (6.5 s against 8.8 s on two
# cores) and run as fast (bench/sweep_cold.py; docs/sweep.md). A run's programs keep XLA's
# defaults: a log is replayed by a program of another batch size than the one that flew it,
# bit for bit, and with this emitter the two rounded apart (waypoints.yaml: one ulp of attitude
# at tick 23,346). A sweep's member agrees with its run alone to 1e-9, not bits (docs/sweep.md).
COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

_configured = False
_options_known = True  # until this XLA refuses one of COMPILER_OPTIONS


def configure() -> None:
    """Apply hil's JAX settings to this process; calls after the first change nothing.

    Call it before anything is traced: arrays made before it are float32. ``XLA_FLAGS`` is read
    once, when JAX starts its CPU backend (at the first computation, not at ``import jax``):
    called after that, the scheduler flag has no effect and only speed is lost; every other
    setting still applies. The settings are process-wide: a program of your own that flies
    hil in the same process computes in float64 from then on too.
    """
    global _configured
    if _configured:
        return
    given = os.environ.get("XLA_FLAGS", "")
    flags = (*_XLA_FLAGS, f"--xla_force_host_platform_device_count={len(os.sched_getaffinity(0))}")
    missing = [flag for flag in flags if flag.split("=")[0] not in given]  # a user's own value wins
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([given, *missing]).strip()

    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    try:
        jax.config.update("jax_compilation_cache_dir", str(cache_directory("jax")))
    except CacheDirectoryError:
        pass  # no persistent cache then; ``hil run`` refuses such a directory with the reason before compiling
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _unroll_threefry_on_cpu()
    _one_cache_entry_for_every_cpu_device()
    _configured = True


def compiled(lowered: "jax.stages.Lowered") -> "jax.stages.Compiled":
    """``lowered`` compiled with :data:`COMPILER_OPTIONS`, or with XLA's defaults where this XLA
    does not know one of them (a later JAX may drop an option; the program is the same, only its
    compilation slower). The options are part of JAX's persistent cache key."""
    global _options_known
    if _options_known:
        try:
            return lowered.compile(compiler_options=COMPILER_OPTIONS)
        except Exception as error:  # jax.errors.JaxRuntimeError, whose home has moved between versions
            if "No such compile option" not in str(error):
                raise
            _options_known = False
    return lowered.compile()


class CacheDirectoryError(RuntimeError):
    """hil's cache directory is one that someone else could write to."""


def cache_root() -> Path:
    explicit = os.environ.get("HIL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hil"


def cache_directory(part: str) -> Path:
    """``part`` (``jax``, ``ticks``, ``firmware``) of hil's cache directory, made with mode 0700.

    Raises :class:`CacheDirectoryError` when the cache directory or ``part`` belongs to another
    user or others may write to it: hil runs the binaries and loads the libraries and programs
    it finds there.
    """
    root = cache_root()
    for folder in (root, root / part):
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            status = folder.stat()
        except OSError as error:
            raise CacheDirectoryError(f"cannot use the cache directory {folder} ({error.strerror or error}); set "
                                      "HIL_CACHE_DIR to a folder of your own") from None
        if status.st_uid != os.geteuid():
            raise CacheDirectoryError(f"the cache directory {folder} belongs to another user (uid {status.st_uid}); "
                                      "set HIL_CACHE_DIR to a folder of your own")
        if status.st_mode & 0o022:
            raise CacheDirectoryError(f"the cache directory {folder} can be written by others (mode "
                                      f"{status.st_mode & 0o777:o}); chmod go-w it, or set HIL_CACHE_DIR to a "
                                      "private folder")
    return root / part


def _unroll_threefry_on_cpu() -> None:
    """Lower threefry on CPU as straight-line code instead of a loop.

    JAX rolls threefry's 20 rounds into a loop on CPU to save compile time; in a tick loop each
    iteration is a separate XLA step and the PRNG costs more than the physics. The arithmetic,
    and so every random bit, is the same either way (tests/test_determinism.py checks). Uses a
    private JAX module; if it moves, the default lowering stays and only speed is lost.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return
    rule = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    primitive = getattr(threefry2x32, "threefry2x32_p", None)
    if rule is not None and primitive is not None:
        mlir.register_lowering(primitive, rule, platform="cpu")



def _one_cache_entry_for_every_cpu_device() -> None:
    """Key the persistent compilation cache without the CPU device a program runs on, as JAX keys
    GPU programs.

    ``hil sweep`` flies the same program on every core's device; with the device in the key each
    compiles its own copy (6 s each, and two at once take longer than one after the other). With
    it left out, the devices after the first load the first's executable from the cache, loaded
    for their own device: the same code, so the same bits (tests/test_sweep.py compares one device
    with two). Uses a private JAX function; if it moves, each device compiles as before.
    """
    import inspect

    try:
        from jax._src import cache_key
    except ImportError:
        return
    keyed = getattr(cache_key, "_hash_serialized_compile_options", None)
    if keyed is None or "strip_device_assignment" not in inspect.signature(keyed).parameters:
        return

    def without_the_device(hash_obj, compile_options, strip_device_assignment=False):
        return keyed(hash_obj, compile_options, strip_device_assignment=True)

    cache_key._hash_serialized_compile_options = without_the_device
