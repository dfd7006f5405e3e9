"""Flight logs out to the tools engineers use: CSV for spreadsheets and pandas, MCAP for Foxglove.

Both read the log a chunk of ticks at a time (:meth:`hil.flightlog.LogReader.chunks`) and write
as they go, so memory stays bounded however long the log.
"""

import csv
import json
from pathlib import Path

from hil import flightlog
from hil.scenario import READINGS

STATE_FIELDS = ("position", "velocity", "attitude", "angular_rate", "rotor_speed", "wind")
COLUMNS = {"csv": (), "mcap": STATE_FIELDS + ("command", "fresh")}  # what each format reads of a row
CHUNK_TICKS = 512  # rows converted to Python numbers at a time


def _columns(layout: dict) -> list[tuple[str, int]]:
    """(column name, row index) in row order: ``position.0``, ..., ``reading.imu.gyro_x``, ..."""
    columns = []
    for name, (offset, size) in sorted(layout.items(), key=lambda item: item[1][0]):
        sensor = name.split(".", 1)[1] if name.startswith("reading.") else None
        labels = READINGS.get(sensor, ())
        if len(labels) != size:
            labels = tuple(str(i) for i in range(size))
        columns += [(f"{name}.{label}" if size > 1 or sensor else name, offset + i) for i, label in enumerate(labels)]
    return columns


def to_csv(reader: flightlog.LogReader, path: Path) -> int:
    """One row per tick: tick, time (s) and every column of the tick's row. Returns the rows written."""
    columns = _columns(reader.layout)
    indices = [index for _, index in columns]
    written = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tick", "time_s"] + [name for name, _ in columns])
        for chunk in reader.chunks(CHUNK_TICKS):
            # tolist gives Python floats, whose repr round-trips a float64 exactly.
            writer.writerows([tick, repr(tick / reader.rate)] + [repr(value) for value in row]
                             for tick, row in zip(chunk.ticks.tolist(), chunk.rows[:, indices].tolist()))
            written += len(chunk.rows)
    return written


def _schema(title: str, fields: list[str]) -> bytes:
    properties = {"tick": {"type": "integer"}, "time": {"type": "number", "description": "s of simulated time"}}
    properties.update({field: {"type": "number"} for field in fields})
    return json.dumps({"title": title, "type": "object", "properties": properties}).encode()


def to_mcap(reader: flightlog.LogReader, path: Path) -> dict:
    """MCAP with JSON messages: ``/state``, ``/actuators`` and ``/sensors/<name>`` (on fresh samples only).

    Message times are simulated time, so two exports of a deterministic run are identical.
    Returns the number of messages per topic.
    """
    from mcap.writer import Writer

    layout, rate = reader.layout, reader.rate
    sensors = [name.split(".", 1)[1] for name in layout if name.startswith("reading.")]
    fresh_offset, _ = layout["fresh"]
    topics = {"/state": [(f"{field}_{i}", layout[field][0] + i) for field in STATE_FIELDS
                         for i in range(layout[field][1])],
              "/actuators": [(f"motor_{i}", layout["command"][0] + i) for i in range(layout["command"][1])]}
    for sensor in sensors:
        offset, size = layout[f"reading.{sensor}"]
        labels = READINGS.get(sensor, ())
        labels = labels if len(labels) == size else tuple(str(i) for i in range(size))
        topics[f"/sensors/{sensor}"] = [(label, offset + i) for i, label in enumerate(labels)]
    freshness = {topic: fresh_offset + sensors.index(topic.rsplit("/", 1)[1])
                 for topic in topics if topic.startswith("/sensors/")}
    counts = {topic: 0 for topic in topics}
    with open(path, "wb") as handle:
        writer = Writer(handle)
        writer.start(profile="", library=f"hil {reader.header['hil']}")
        channels = {}
        for topic, fields in topics.items():
            schema = writer.register_schema(name=topic.strip("/").replace("/", "."), encoding="jsonschema",
                                            data=_schema(topic, [name for name, _ in fields]))
            channels[topic] = writer.register_channel(topic=topic, message_encoding="json", schema_id=schema)
        for chunk in reader.chunks(CHUNK_TICKS):
            for tick, row in zip(chunk.ticks.tolist(), chunk.rows.tolist()):
                stamp = round(tick / rate * 1e9)
                for topic, fields in topics.items():
                    if topic in freshness and not row[freshness[topic]]:
                        continue
                    message = {"tick": tick, "time": tick / rate, **{name: row[i] for name, i in fields}}
                    writer.add_message(channels[topic], log_time=stamp, publish_time=stamp, sequence=counts[topic],
                                       data=json.dumps(message).encode())
                    counts[topic] += 1
        writer.finish()
    return counts
