"""hil sweep's outputs (--junit, --keep-traces, --plot) and any member flown alone (hil run --member).

One sweep of a short hover, flown by the command line as a user flies it, feeds every test: its
bounds sit near the middle of the members' values, so some members pass and some fail each
expectation, and a member flown differently would change its verdict.
"""

import csv
import json
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from hil import flightlog, scenario, sweep
from hil.firmware_stubs import c_build
from support import HOVER_DISPERSIONS, SCENARIOS, SPLITTING_EXPECT, dispersed_hover, hil_command

RUNS = 24
EXPECT = [e for e in SPLITTING_EXPECT if e["name"] != "climbs gently"]


def hil(*args, timeout=600):
    return subprocess.run(hil_command(*map(str, args)), capture_output=True, text=True, timeout=timeout)


pytestmark = pytest.mark.slow  # a sweep, members flown alone and replayed: some 80 s in all


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep, flown by ``hil sweep --junit --keep-traces --plot``, and what it wrote."""
    folder = tmp_path_factory.mktemp("sweep")
    base = dispersed_hover(EXPECT, runs=RUNS, seed=11, require=0.5, dispersions=HOVER_DISPERSIONS[:2])
    path = folder / "sweep.yaml"
    path.write_text(base.source)
    out = folder / "out"
    completed = hil("sweep", path, "--set", "sweep.seed=12", "--out", out, "--junit", folder / "junit.xml",
                    "--keep-traces", "--plot")
    assert completed.returncode == 1, completed.stdout + completed.stderr  # some expectations are below require
    with open(out / "members.csv", newline="") as file:
        table = list(csv.DictReader(file))
    with np.load(out / "traces.npz") as traces:
        traces = dict(traces)
    return {"path": path, "out": out, "folder": folder, "completed": completed, "table": table,
            "summary": json.loads((out / "summary.json").read_text()), "traces": traces}


def verdicts(row) -> list[bool]:
    return [row[f"{e['name']}: passed"] == "1" for e in EXPECT]


def test_junit_has_a_case_per_expectation_failed_below_the_required_rate(swept):
    summary = swept["summary"]
    suite = ElementTree.parse(swept["folder"] / "junit.xml").getroot().find("testsuite")
    assert {p.get("name"): p.get("value") for p in suite.find("properties")}["seed"] == "12"
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == [e["name"] for e in EXPECT]
    failing = 0
    for case, entry in zip(cases, summary["expectations"]):
        failure = case.find("failure")
        assert (failure is None) == (entry["pass_rate"] >= 0.5), entry["name"]
        if failure is None:
            continue
        failing += 1
        low, high = entry["wilson_95"]
        message = failure.get("message")
        assert f"failure rate {100 * (1 - entry['pass_rate']):.2f} %" in message
        assert f"{RUNS - entry['passed']}/{RUNS} members" in message
        assert f"95 % interval {100 * (1 - high):.2f} % to {100 * (1 - low):.2f} %" in message
        assert "pass rate at least 0.5" in message
        for worst in entry["worst"]:  # number, seed, draws, measured value and bound
            line = next(line for line in failure.text.splitlines() if line.startswith(f"  member {worst['member']} "))
            assert f"seed {worst['seed']}" in line and "vehicle.mass=" in line and "environment.wind.steady=[" in line
            assert f"measured {worst['measured']}, bound " in line
    assert 0 < failing < len(EXPECT), failing
    assert suite.get("failures") == str(failing)


def test_the_summary_says_how_to_build_the_members_again(swept):
    summary = swept["summary"]
    assert summary["scenario_path"] == str(swept["path"])
    assert summary["set"] == ["sweep.seed=12"]
    assert summary["sweep_seed"] == 12 and summary["runs"] == RUNS
    swept_text = scenario.with_changes(scenario.load(swept["path"]), ["sweep.seed=12"], option="--set")
    assert summary["scenario_sha256"] == sweep.fingerprint(swept_text)


def test_keep_traces_writes_every_members_rows_with_the_column_names(swept):
    traces, table = swept["traces"], swept["table"]
    rows, columns = traces["rows"], list(traces["columns"])
    assert rows.shape[:2] == (RUNS, 2001) and len(columns) == rows.shape[2]
    assert columns[:3] == ["position.0", "position.1", "position.2"]
    assert "reading.imu.gyro_x" in columns
    assert traces["passed"].tolist() == [verdicts(row) for row in table]
    assert traces["expectations"].tolist() == [e["name"] for e in EXPECT]
    # Each member's rows are its own: the highest altitude in them is the one the sweep measured.
    altitude = -rows[:, :, columns.index("position.2")]
    assert altitude.max(axis=1).tolist() == [float(row["stays low: max"]) for row in table]
    assert len({float(row["stays low: max"]) for row in table}) == RUNS


def test_plot_draws_the_kept_traces(swept):
    image = swept["out"] / "sweep.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 50_000
    assert "flying members" not in swept["completed"].stderr  # --keep-traces kept the fan's rows
    assert str(image) in swept["completed"].stdout


def test_a_member_flown_alone_in_process_has_the_sweeps_verdicts_and_trajectory_and_replays(swept, tmp_path):
    table, rows = swept["table"], swept["traces"]["rows"]
    failing = next(i for i, row in enumerate(table) if not all(verdicts(row)))
    passing = next(i for i, row in enumerate(table) if all(verdicts(row)))
    for member, result in ((failing, swept["out"]), (passing, swept["out"] / "members.csv")):
        log, report = tmp_path / f"member{member}.hillog", tmp_path / f"member{member}.json"
        flown = hil("run", swept["path"], "--member", f"{result}:{member}", "--firmware", "in-process",
                    "--out", log, "--json", report, "-q")
        assert flown.returncode == (0 if member == passing else 1), flown.stdout + flown.stderr
        assert f"member {member} of the sweep in {result}: seed {table[member]['seed']}, vehicle.mass=" in flown.stderr
        outcomes = json.loads(report.read_text())["expectations"]
        assert [o["passed"] for o in outcomes] == verdicts(table[member])
        reader = flightlog.LogReader(log)
        assert reader.header["seed"] == int(table[member]["seed"])
        logged = np.concatenate([chunk.rows for chunk in reader.chunks()])
        largest = float(np.max(np.abs(logged - rows[member])))
        print(f"member {member} alone against the sweep's traces: largest difference {largest:.3g}")
        assert largest <= 1e-9, (member, largest)
        replayed = hil("replay", log)
        assert replayed.returncode == 0 and "bit-identical" in replayed.stdout, replayed.stdout + replayed.stderr


@pytest.mark.skipif(shutil.which((c_build.compiler() or ["cc"])[0]) is None, reason="no C compiler ($CC or cc)")
def test_a_member_flies_against_the_c_firmware_over_udp(swept, tmp_path):
    member, log = 5, tmp_path / "c.hillog"
    flown = hil("run", swept["path"], "--member", f"{swept['out']}:{member}", "--firmware", "c", "--out", log)
    assert flown.returncode in (0, 1), flown.stdout + flown.stderr
    assert "Traceback" not in flown.stderr and "0 late, 0 lost" in flown.stdout, flown.stdout
    reader = flightlog.LogReader(log)
    assert reader.header["runtime"] == "c" and reader.header["seed"] == int(swept["table"][member]["seed"])
    assert sum(len(chunk.rows) for chunk in reader.chunks()) == 2001 and reader.complete
    # The C controller is not the JAX one to the bit, but it flies the member's mass and wind.
    assert f"mass: {float(swept['table'][member]['vehicle.mass'])!r}" in reader.header["scenario_text"]


def test_a_member_of_another_scenario_or_not_flown_is_refused_naming_why(swept, tmp_path):
    out, path = swept["out"], swept["path"]
    where = out / "summary.json"
    with pytest.raises(sweep.SweepError, match=f"{where}: member {RUNS} was not flown: the sweep flew members 0 "
                                               f"to {RUNS - 1}"):
        sweep.member_of(out, RUNS, path)
    with pytest.raises(sweep.SweepError, match=rf"a sweep of 'hover' from {path} --set sweep.seed=12; "
                                               rf"{SCENARIOS / 'hover_sweep.yaml'} is 'hover_sweep'"):
        sweep.member_of(out, 0, SCENARIOS / "hover_sweep.yaml")
    edited = tmp_path / "edited.yaml"
    edited.write_text(path.read_text().replace("mass: 1.5", "mass: 1.52"))
    with pytest.raises(sweep.SweepError, match=f"{edited} is not the text that was swept"):
        sweep.member_of(out / "members.csv", 0, edited)
    with pytest.raises(sweep.SweepError, match=f"{tmp_path / 'summary.json'}: cannot read it"):
        sweep.member_of(tmp_path, 0, path)
    member, drawn = sweep.member_of(out / "summary.json", 3, path)
    assert member.seed == int(swept["table"][3]["seed"]) and drawn["vehicle.mass"] == float(
        swept["table"][3]["vehicle.mass"])
    for given, words in ((f"{out}:{RUNS + 5}", f"member {RUNS + 5} was not flown"),
                         (str(out), "give RESULT:I")):
        refused = hil("run", path, "--member", given, "--firmware", "in-process", "--out", tmp_path / "x.hillog")
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and not (tmp_path / "x.hillog").exists()


@pytest.mark.slow
def test_plot_without_kept_traces_flies_the_fans_members_again(swept, tmp_path):
    completed = hil("sweep", swept["path"], "--runs", "6", "--out", tmp_path, "--plot")
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    assert "flying members 0-5 again with their traces kept" in completed.stderr
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "traces.npz").exists()


def test_a_sweep_into_an_earlier_sweeps_folder_leaves_only_its_own_results(swept, tmp_path):
    """The earlier sweep's traces and plot go, not passing for this one's; a --junit file that
    cannot be written is named, not the folder."""
    folder = tmp_path / "out"
    shutil.copytree(swept["out"], folder)
    assert (folder / "traces.npz").exists() and (folder / "sweep.png").exists()
    completed = hil("sweep", swept["path"], "--runs", "4", "--out", folder, "--junit", "/dev/full")
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "error: --junit /dev/full: cannot write: No space left on device" in completed.stderr
    assert json.loads((folder / "summary.json").read_text())["runs"] == 4
    assert sorted(path.name for path in folder.iterdir()) == ["members.csv", "summary.json"]
