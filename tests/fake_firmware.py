"""A misbehaving firmware for link tests: speaks the hil protocol over UDP, then fails on purpose.

    python tests/fake_firmware.py --udp HOST:PORT [--version N] [--silent-after TICK]
                                  [--crash-after TICK] [--throttle T] [--mischief] [--bad-reply KIND:TICK]
                                  [--busy-at TICK:SECONDS] [--stop-at TICK] [--status-flood N]
                                  [--asks-for SET --params-out PATH [--drop-acks N]]

--mischief answers every SENSORS, with a throttle that changes with the tick, and around some
replies sends what a link must cope with: a STATUS, a datagram of garbage, a duplicate of the
reply, a late reply to the tick before.

--bad-reply KIND:TICK sends, just before its reply to TICK, an ACTUATORS that hil must not fly:
``future`` (stamped TICK + 1000, a tick not sent yet), ``nan`` (a NaN throttle) or ``three``
(3 throttles for 4 motors). May be given more than once.

--busy-at TICK:SECONDS computes (spins a CPU) for SECONDS before replying to TICK: a slow firmware.
--stop-at TICK stops itself (SIGSTOP) instead of replying to TICK. --status-flood N sends N
warning STATUS messages before every reply.

--asks-for SET names a parameter set in its HELLO; it writes the (name, values) pairs it takes
from hil's PARAMs to --params-out as JSON, and leaves the first --drop-acks PARAMs unacknowledged
(lost acknowledgements: hil must send those again).
"""

import argparse
import json
import os
import signal
import socket
import sys
import time

import msgpack

from hil import wire


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--udp", required=True)
    parser.add_argument("--version", type=int, default=wire.PROTOCOL_VERSION)
    parser.add_argument("--silent-after", type=int, default=None, help="stop answering SENSORS from this tick on")
    parser.add_argument("--crash-after", type=int, default=None, help="print a last word and exit 7 at this tick")
    parser.add_argument("--throttle", type=float, default=0.0)
    parser.add_argument("--mischief", action="store_true")
    parser.add_argument("--bad-reply", action="append", default=[], metavar="KIND:TICK")
    parser.add_argument("--busy-at", default=None, metavar="TICK:SECONDS")
    parser.add_argument("--stop-at", type=int, default=None)
    parser.add_argument("--status-flood", type=int, default=0)
    parser.add_argument("--asks-for", default="")
    parser.add_argument("--params-out")
    parser.add_argument("--drop-acks", type=int, default=0)
    args = parser.parse_args()
    busy_tick, busy_seconds = (int(args.busy_at.split(":")[0]), float(args.busy_at.split(":")[1])) \
        if args.busy_at else (None, 0.0)
    bad = {int(tick): kind for kind, tick in (entry.split(":") for entry in args.bad_reply)}
    host, port = args.udp.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    sock.settimeout(10.0)
    seq = 0
    taken, unanswered = [], args.drop_acks

    def send(message, peer):
        nonlocal seq
        sock.sendto(wire.encode(message), peer)
        seq += 1

    def misbehave(tick, send, peer):
        reply = (0.5 + 0.05 * (tick % 5),) * 4
        if tick % 7 == 3:
            send(wire.Status(seq, tick, 1, f"tick {tick}"), peer)
        if tick % 11 == 5:
            sock.sendto(b"\x05garbage\x00", peer)
        if tick % 17 == 8:
            send(wire.Actuators(seq, tick - 1, (0.9,) * 4), peer)
        send(wire.Actuators(seq, tick, reply), peer)
        if tick % 13 == 6:
            sock.sendto(wire.encode(wire.Actuators(seq - 1, tick, reply)), peer)

    while True:
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            sys.exit(3)
        message = wire.decode(data[:-1])
        if isinstance(message, wire.Hello):
            send(wire.Hello(seq, args.version, "firmware", "quadrotor", 4, 0, (wire.SensorSpec("imu", 6, 0.0),),
                            params=args.asks_for), peer)
        elif isinstance(message, wire.Param):
            if message.index == len(taken):
                taken.append((message.name, message.values))
            if unanswered:
                unanswered -= 1
                continue
            send(wire.ParamAck(seq, 0, message.index), peer)
            if len(taken) == message.count:
                with open(args.params_out, "w") as out:
                    json.dump(taken, out)
        elif isinstance(message, wire.Sensors):
            if args.crash_after is not None and message.tick >= args.crash_after:
                print(f"fake firmware: giving up at tick {message.tick}", flush=True)
                sys.exit(7)
            if message.tick == args.stop_at:
                os.kill(os.getpid(), signal.SIGSTOP)
            if message.tick == busy_tick:
                until = time.process_time() + busy_seconds
                while time.process_time() < until:
                    pass
            for _ in range(args.status_flood):
                send(wire.Status(seq, message.tick, 2, f"flood at tick {message.tick}"), peer)
            if args.mischief:
                misbehave(message.tick, send, peer)
            elif args.silent_after is None or message.tick < args.silent_after:
                if message.tick in bad:
                    sock.sendto(bad_reply(bad[message.tick], seq, message.tick), peer)
                    seq += 1
                send(wire.Actuators(seq, message.tick, (args.throttle,) * 4), peer)
        elif isinstance(message, wire.Goodbye):
            sys.exit(0)


def bad_reply(kind: str, seq: int, tick: int) -> bytes:
    """The frame of an ACTUATORS that a correct hil refuses; hil.wire will not write a NaN, so msgpack does."""
    if kind == "future":
        return wire.encode(wire.Actuators(seq, tick + 1000, (1.0,) * 4))
    if kind == "three":
        return wire.encode(wire.Actuators(seq, tick, (1.0,) * 3))
    return wire.frame(msgpack.packb([wire.ACTUATORS, seq, tick, [float("nan"), 1.0, 1.0, 1.0]], use_single_float=True))


if __name__ == "__main__":
    main()
