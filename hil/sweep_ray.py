"""``hil sweep --executor ray``: a sweep's chunks flown as Ray tasks (the optional extra ``hil[ray]``).

Each chunk is one task running :func:`hil.sweep.fly_chunk` (build and fly) in a Ray worker; the
driver keeps a bounded number of tasks in flight and hands chunks back as they finish, in any
order (:func:`hil.sweep.fly` sorts them). A task reports each segment it flies to a small actor
(:class:`Tally`), which the driver reads while it waits, so the progress line moves within a
chunk as it does with the local executor. The cluster is the one ``RAY_ADDRESS`` names, or the one
this process is already connected to; otherwise a Ray of this machine is started on loopback for
the sweep and shut down after it.

A member's numbers depend on the program it flies in, and so on how many members each device
flies (docs/sweep.md). A worker therefore splits each chunk over as many devices as the driver
would: the driver's ``XLA_FLAGS`` (which give a CPU-only host its device count) travel with the
tasks, and a worker that has fewer devices of the driver's platform refuses the chunk. With the
same jax and jaxlib on the same kind of processor a member is then bit-identical to the local
executor's (tests/test_sweep_ray.py); on another processor XLA may compile other instructions
and the rule for another batch shape applies (within 1e-12).
"""

import collections
import dataclasses
import logging
import os
import socket
import threading
import warnings
from typing import Callable, Iterator

from hil.sweep import Chunk, ChunkPlan, SweepError, flight_devices

INSTALL = "pip install 'hil[ray]'"
CONNECT_SECONDS = 5.0  # to reach the head node RAY_ADDRESS names
IN_FLIGHT_PER_SLOT = 2  # tasks queued per task the cluster can run at once: one flies, one waits
PROGRESS_SECONDS = 0.5  # how often the driver reads the tasks' reports while it waits
log = logging.getLogger(__name__)  # hil sweep -v: each chunk as it lands
QUIET = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}  # errors: SweepError


def fly(job: ChunkPlan, chunks: list[range], flown: Callable[[int], None]) -> Iterator[Chunk]:
    """Fly ``chunks`` of ``job`` as Ray tasks; yields each :class:`~hil.sweep.Chunk` as it finishes.
    ``flown(member_ticks)`` is called as the tasks report their segments, all of a chunk's before it
    is yielded."""
    try:
        import ray
    except ImportError:
        raise SweepError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None

    local = flight_devices(job.scenario.firmware.name)
    job = dataclasses.replace(job, devices=job.devices or len(local))
    started = _connect(ray)
    try:
        yield from _fly(ray, job, chunks, local[0].platform, flown)
    finally:
        if started:
            ray.shutdown()


def _connect(ray) -> bool:
    """Connect to the cluster; True when this call connected (and so must disconnect)."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _answers(address)
    try:
        if address:
            ray.init(address=address, **QUIET)
        else:
            start_local()
    except Exception as error:  # Ray raises ConnectionError, ValueError, RuntimeError... by what went wrong
        where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a Ray of this machine"
        raise SweepError(f"--executor ray: cannot start or reach {where}: {_first_line(error)}") from None
    return True


def _answers(address: str) -> None:
    """Refuse a RAY_ADDRESS where nothing listens: Ray would retry it for minutes, printing warnings."""
    if "://" in address or ":" not in address:  # a Ray Client URL, or "auto": Ray finds and reports those
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except (OSError, ValueError) as error:
        why = getattr(error, "strerror", None) or error
        raise SweepError(f"--executor ray: nothing answers at RAY_ADDRESS={address} ({why}): start the cluster "
                         "there (ray start --head), or unset RAY_ADDRESS to fly on a Ray of this machine") from None


def start_local(**options) -> None:
    """Start a Ray of this machine for this process, listening on loopback only (``options``: more
    arguments of ``ray.init``, such as ``num_cpus``); ``ray.shutdown()`` stops it.

    On Linux Ray replaces a loopback node address by the host's own, and its servers then listen
    on every interface: an open, unauthenticated cluster that runs what it is sent. Its
    single-machine mode (the one it uses on macOS and Windows) keeps them on loopback; that
    switch is private, so if it moves Ray's default applies."""
    import ray
    from ray._private import ray_constants

    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if before is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with warnings.catch_warnings():
            # Ray starts its servers by fork and exec at once, which cannot deadlock on JAX's threads; JAX
            # warns of any fork all the same.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            ray.init(address="local", _node_ip_address="127.0.0.1", **{**QUIET, **options})
    finally:
        if before is not None:
            ray_constants.ENABLE_RAY_CLUSTER = before


class Tally:
    """A Ray actor the tasks report to: (the chunk's first member, its member-ticks flown so far),
    in the order each task flew them. A task run again by Ray after a lost worker reports from 0
    again; the driver tells only what goes past what it has told of that chunk."""

    def __init__(self):
        self.reports = []

    def report(self, chunk: int, member_ticks: int) -> None:
        self.reports.append((chunk, member_ticks))

    def take(self) -> list[tuple[int, int]]:
        reports, self.reports = self.reports, []
        return reports


def _fly(ray, job: ChunkPlan, chunks: list[range], platform: str, flown: Callable[[int], None]) -> Iterator[Chunk]:
    kind = "GPU" if platform == "gpu" else "CPU"
    largest = max((node["Resources"].get(kind, 0.0) for node in ray.nodes() if node["Alive"]), default=0.0)
    if kind == "GPU":  # Ray hides the GPUs from a task that asks for none
        if largest < job.devices:
            raise SweepError(f"--executor ray: each chunk flies on {job.devices} GPUs and no node of the Ray cluster "
                             f"has that many (the most is {largest:g}); give --devices {int(largest) or 1}")
        amount = job.devices
    else:  # a chunk keeps as many cores busy as it has devices; at most a whole node, so it always fits
        amount = min(job.devices, largest)
    slots = int(ray.cluster_resources().get(kind, 0.0) // max(amount, 1))
    in_flight = IN_FLIGHT_PER_SLOT * max(slots, 1)
    flags = os.environ.get("XLA_FLAGS")
    task = ray.remote(_fly_chunk).options(
        **{f"num_{kind.lower()}s": amount}, runtime_env={"env_vars": {"XLA_FLAGS": flags}} if flags else None)
    shared = ray.put(job)  # sent to the object store once, not with every task
    tally = ray.remote(num_cpus=0)(Tally).remote()
    told: dict[int, int] = {}  # a chunk's first member -> its member-ticks told
    reading = tally  # None once the tally's process is lost: progress is then told as chunks land

    def tell() -> None:
        nonlocal reading
        if reading is None:
            return
        try:
            reports = ray.get(reading.take.remote())
        except ray.exceptions.RayError:  # a node gone, the OOM killer: no more reports
            reading = None
            return
        for chunk, member_ticks in reports:
            if member_ticks > told.get(chunk, 0):
                flown(member_ticks - told.get(chunk, 0))
                told[chunk] = member_ticks

    waiting, pending = collections.deque(chunks), {}
    try:
        while waiting or pending:
            while waiting and len(pending) < in_flight:
                members = waiting.popleft()
                pending[task.remote(shared, members, platform, tally)] = members
            finished, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_SECONDS)
            tell()  # a finished task's reports are all in: it waited for its last one
            if not finished:
                continue
            members = pending.pop(finished[0])
            try:
                chunk = ray.get(finished[0])
            except ray.exceptions.RayError as error:
                raise SweepError(f"members {members.start}-{members.stop - 1} failed on a Ray worker: "
                                 f"{_reason(error)}") from None
            log.info("members %d-%d landed from a Ray worker, built and flown there (%.1f s in the program)",
                     members.start, members.stop - 1, chunk.flight_seconds)
            yield chunk
    finally:  # an error or an abandoned sweep: the cluster stops flying what nobody will read
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.kill(tally)


def _fly_chunk(job: ChunkPlan, members: range, platform: str, tally) -> Chunk:
    """A Ray task: one chunk flown in a worker with hil's JAX settings."""
    import ray

    from hil import jaxconfig, sweep

    jaxconfig.configure()  # float64 and the device count before this worker traces anything
    local = sweep.flight_devices(job.scenario.firmware.name)
    if local[0].platform != platform or len(local) < job.devices:
        raise SweepError(f"the worker on node {ray.util.get_node_ip_address()} has {len(local)} "
                         f"{local[0].platform.upper()} devices; the sweep splits each chunk over {job.devices} "
                         f"{platform.upper()} devices, as the driver does")
    lock, flown, last = threading.Lock(), [0], []

    def report(member_ticks: int) -> None:  # from the devices' threads
        with lock:
            flown[0] += member_ticks
            last[:] = [tally.report.remote(members.start, flown[0])]

    chunk = sweep.fly_chunk(job, members, report)
    try:
        ray.get(last)  # an actor runs one caller's calls in order: every report is in when this one is
    except ray.exceptions.RayError:
        pass  # the tally is lost: the driver tells this chunk's progress as it lands; the chunk is whole
    return chunk


def _reason(error) -> str:
    """The worker's own error (a task's exception), else what Ray says went wrong (a worker lost)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, SweepError):
        return str(cause)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
