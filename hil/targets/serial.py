"""``serial:///dev/ttyACM0?baud=921600``, or any pyserial URL (``socket://host:port``, ``rfc2217://...``):
a board on a serial port.

A board keeps its own clock, so hil flies it in real time (``?pacing=lockstep`` waits for each
reply, as the C firmware's ``--pty`` board allows). ``baud`` and ``pacing`` are hil's parameters;
a pyserial URL keeps its own (``socket://host:port?logging=debug``). ``--port PORT --baud N``
name the same target.
"""

import importlib.util
import os
import re
from dataclasses import dataclass

from hil.scenario import Scenario
from hil.targets import Peer, Target, TargetError, Url, pacing, pacing_query

DEFAULT_BAUD = 921600
MAX_BAUD = 50_000_000  # beyond any UART; termios and pyserial fail on numbers past 32 bits
OURS = ("baud", "pacing")  # the parameters hil reads; a pyserial URL's others are pyserial's


def check_port(port: str) -> str:
    """``port`` if pyserial can parse it, as it will when the board is opened (nothing is opened)."""
    import serial

    try:
        instance = serial.serial_for_url(port, do_not_open=True)
        parse = getattr(instance, "from_url", None)
        if parse is not None:
            parse(port)
    except Exception as error:  # noqa: BLE001  pyserial's URL parsers also fail with TypeError, KeyError...
        detail = error if isinstance(error, (ValueError, serial.SerialException)) else "pyserial cannot parse it"
        raise TargetError(f"{port!r} is not a serial device or pyserial URL ({detail})") from None
    return port


def check_baud(baud: int) -> int:
    if not 1 <= baud <= MAX_BAUD:
        raise TargetError(f"baud={baud}: give a rate from 1 to {MAX_BAUD}")
    return baud


@dataclass(frozen=True)
class SerialTarget(Target):
    port: str  # the device or pyserial URL, as pyserial opens it
    baud: int = DEFAULT_BAUD
    realtime: bool | None = None  # the URL's pacing; None: real time

    SCHEMES = ("serial",)
    FORMS = (("serial:///dev/ttyACM0?baud=921600", "a board on a serial port, in real time (?pacing=lockstep)"),
             ("socket://192.168.1.60:4000", "any pyserial URL: a board behind it, as serial://"))
    RUNTIME = "board"
    REALTIME = True

    @classmethod
    def claims(cls, scheme: str) -> bool:
        """serial://, and every scheme pyserial has a URL handler for."""
        import serial

        return scheme in cls.SCHEMES or bool(re.fullmatch(r"[a-z0-9_]+", scheme)) and any(
            importlib.util.find_spec(f"{package}.protocol_{scheme}") is not None
            for package in serial.protocol_handler_packages)

    @classmethod
    def from_url(cls, url: Url) -> "SerialTarget":
        if url.scheme == "serial":
            port, parameters = url.split(OURS)
            if not port:
                raise TargetError("no device: write serial:///dev/ttyACM0 (three slashes) or serial://COM3")
        else:  # pyserial's own URL: its parameters stay in it, hil's are taken out
            where, _, query = url.rest.partition("?")
            items = [item for item in query.split("&") if item]
            theirs = [item for item in items if item.partition("=")[0] not in OURS]
            _, parameters = Url(url.scheme, "?" + "&".join(i for i in items if i not in theirs)).split(OURS)
            port = f"{url.scheme}://{where}" + (f"?{'&'.join(theirs)}" if theirs else "")
        baud = parameters.get("baud", str(DEFAULT_BAUD))
        if not baud.isdigit():
            raise TargetError(f"baud={baud}: give a whole number of bits per second")
        return cls(check_port(port), check_baud(int(baud)), pacing(parameters.get("pacing")))

    @classmethod
    def from_options(cls, port: str, baud: int | None) -> "SerialTarget":
        """``--port`` and ``--baud``, each refused by its name."""
        baud = DEFAULT_BAUD if baud is None else baud
        try:
            check_port(port)
        except TargetError as error:
            raise TargetError(f"--port {error}") from None
        try:
            check_baud(baud)
        except TargetError as error:
            raise TargetError(f"--baud: {error}") from None
        return cls(port, baud)

    @property
    def url(self) -> str:
        base = self.port if "://" in self.port else f"serial://{self.port}"
        query = "&".join(filter(None, [f"baud={self.baud}", pacing_query(self.realtime)]))
        return f"{base}{'&' if '?' in base else '?'}{query}"

    def describe(self, scenario: Scenario) -> str:
        return f"a board on {self.port} at {self.baud} baud"

    def absent(self) -> str | None:
        if self.port.startswith("/") and not os.path.exists(self.port):
            return f"serial port {self.port} does not exist (hil ports lists the serial ports here)"
        return None

    def shared(self) -> str:
        return f"serial {self.port}"

    def connect(self, peer: Peer, scenario: Scenario) -> None:
        from hil.bridges.serial_port import SerialLink

        peer.link = SerialLink(self.port, self.baud)
