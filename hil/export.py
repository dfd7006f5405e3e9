"""Flight logs out to the tools engineers use: CSV for spreadsheets and pandas, MCAP for Foxglove."""

import csv
import json
from pathlib import Path

from hil import flightlog

STATE_FIELDS = ("position", "velocity", "attitude", "angular_rate", "rotor_speed", "wind")
SENSOR_FIELDS = {
    "imu": ("gyro_x", "gyro_y", "gyro_z", "accel_x", "accel_y", "accel_z"),
    "baro": ("pressure", "temperature"),
    "mag": ("x", "y", "z"),
    "gps": ("north", "east", "down", "velocity_north", "velocity_east", "velocity_down"),
}


def _columns(layout: dict) -> list[tuple[str, int]]:
    """(column name, row index) in row order: ``position.0``, ..., ``reading.imu.gyro_x``, ..."""
    columns = []
    for name, (offset, size) in sorted(layout.items(), key=lambda item: item[1][0]):
        sensor = name.split(".", 1)[1] if name.startswith("reading.") else None
        labels = SENSOR_FIELDS.get(sensor, tuple(str(i) for i in range(size)))
        columns += [(f"{name}.{label}" if size > 1 or sensor else name, offset + i) for i, label in enumerate(labels)]
    return columns


def to_csv(log: flightlog.FlightLog, path: Path) -> int:
    """One row per tick: tick, time (s) and every column of the tick's row. Returns the rows written."""
    columns = _columns(log.header["layout"])
    rate = log.header["rate_hz"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tick", "time_s"] + [name for name, _ in columns])
        for (tick, _, _), row in zip(log.ticks, log.rows):
            writer.writerow([tick, repr(tick / rate)] + [repr(float(row[i])) for _, i in columns])
    return len(log.rows)


def _schema(title: str, fields: list[str]) -> bytes:
    properties = {"tick": {"type": "integer"}, "time": {"type": "number", "description": "s of simulated time"}}
    properties.update({field: {"type": "number"} for field in fields})
    return json.dumps({"title": title, "type": "object", "properties": properties}).encode()


def to_mcap(log: flightlog.FlightLog, path: Path) -> dict:
    """MCAP with JSON messages: ``/state``, ``/actuators`` and ``/sensors/<name>`` (on fresh samples only).

    Message times are simulated time, so two exports of a deterministic run are identical.
    Returns the number of messages per topic.
    """
    from mcap.writer import Writer

    layout = {name: tuple(span) for name, span in log.header["layout"].items()}
    rate = log.header["rate_hz"]
    sensors = [name.split(".", 1)[1] for name in layout if name.startswith("reading.")]
    fresh_offset, _ = layout["fresh"]
    topics = {"/state": [(f"{field}_{i}", layout[field][0] + i) for field in STATE_FIELDS
                         for i in range(layout[field][1])],
              "/actuators": [(f"motor_{i}", layout["command"][0] + i) for i in range(layout["command"][1])]}
    for sensor in sensors:
        offset, size = layout[f"reading.{sensor}"]
        topics[f"/sensors/{sensor}"] = [(label, offset + i) for i, label in enumerate(SENSOR_FIELDS[sensor][:size])]
    counts = {topic: 0 for topic in topics}
    with open(path, "wb") as handle:
        writer = Writer(handle)
        writer.start(profile="", library=f"hil {log.header.get('hil', '')}")
        channels = {}
        for topic, fields in topics.items():
            schema = writer.register_schema(name=topic.strip("/").replace("/", "."), encoding="jsonschema",
                                            data=_schema(topic, [name for name, _ in fields]))
            channels[topic] = writer.register_channel(topic=topic, message_encoding="json", schema_id=schema)
        for (tick, _, _), row in zip(log.ticks, log.rows):
            stamp = round(tick / rate * 1e9)
            for topic, fields in topics.items():
                if topic.startswith("/sensors/") and not row[fresh_offset + sensors.index(topic.rsplit("/", 1)[1])]:
                    continue
                message = {"tick": tick, "time": tick / rate, **{name: float(row[i]) for name, i in fields}}
                writer.add_message(channels[topic], log_time=stamp, publish_time=stamp, sequence=counts[topic],
                                   data=json.dumps(message).encode())
                counts[topic] += 1
        writer.finish()
    return counts
