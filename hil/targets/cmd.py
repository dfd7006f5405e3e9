"""``cmd://COMMAND``: your own firmware (a SITL build speaking hil's protocol), started by hil.

Everything after ``cmd://`` is the command line, split as a POSIX shell splits it (no shell runs
it); ``{udp}`` in it stands for the HOST:PORT on loopback it must bind. hil starts it in its own
process group, flies it in lockstep (``--realtime`` for real time), keeps its last lines of
output for the report and stops it, and all it started, when the run ends. ``--firmware-cmd
COMMAND`` names the same target.
"""

import os
import shlex
import shutil
from dataclasses import dataclass

from hil.scenario import Scenario
from hil.targets import Peer, Target, TargetError, Url


def split(command: str) -> list[str]:
    """The command's arguments, as the run will split them."""
    try:
        argv = shlex.split(command)
    except ValueError as error:
        raise TargetError(f"{command!r}: {str(error).lower()}") from None
    if not argv:
        raise TargetError("is empty: give the command that starts your firmware")
    return argv


@dataclass(frozen=True)
class CommandTarget(Target):
    command: str  # the command line; {udp} is replaced by the HOST:PORT it must bind

    SCHEMES = ("cmd",)
    FORMS = (("cmd://./my_sitl --udp {udp}", "your own firmware speaking hil's protocol, started by hil on a free "
                                             "UDP port ({udp}), in lockstep"),)
    RUNTIME = "custom"

    def __post_init__(self):
        split(self.command)

    @classmethod
    def from_url(cls, url: Url) -> "CommandTarget":
        return cls(url.rest)  # all of it: a command line may hold ? and & of its own

    @classmethod
    def from_options(cls, command: str) -> "CommandTarget":
        """``--firmware-cmd``, refused by its name."""
        try:
            return cls(command)
        except TargetError as error:
            raise TargetError(f"--firmware-cmd {error}") from None

    @property
    def url(self) -> str:
        return f"cmd://{self.command}"

    def describe(self, scenario: Scenario) -> str:
        return self.command

    def absent(self) -> str | None:
        program = split(self.command)[0]
        found = os.access(program, os.X_OK) if os.sep in program else shutil.which(program) is not None
        return None if found else f"the firmware's program {program!r} is not found (cmd://{self.command})"

    def connect(self, peer: Peer, scenario: Scenario) -> None:
        from hil import firmware_process
        from hil.bridges.udp import UdpLink

        address = f"127.0.0.1:{firmware_process.free_udp_port()}"
        argv = split(self.command.replace("{udp}", address))
        peer.firmware = firmware_process.FirmwareProcess(argv, repr(shlex.join(argv)))
        peer.link = UdpLink(address)
