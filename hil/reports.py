"""Run results in the forms CI systems read: JUnit XML (one test case per expectation) and JSON."""

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def summary(result, log_path=None) -> dict:
    """A machine-readable summary of a run."""
    return {
        "scenario": result.scenario.name, "seed": result.scenario.seed, "duration": result.scenario.duration,
        "runtime": result.runtime, "passed": result.passed, "failure": result.failure,
        "ticks": result.trace.ticks_done, "wall_seconds": result.wall_seconds,
        "reproducible": result.not_reproducible is None, "not_reproducible": result.not_reproducible,
        "expectations": [{"name": o.name, "kind": o.kind, "passed": o.passed, "measured": o.measured, "bound": o.bound,
                          "detail": o.detail} for o in result.outcomes],
        "link": dict(result.link_stats.summary()) if result.link_stats is not None else None,
        "log": None if log_path is None else str(log_path),
    }


def write_json(result, path: Path, log_path=None) -> None:
    Path(path).write_text(json.dumps(summary(result, log_path), indent=2) + "\n", encoding="utf-8")


def write_junit(result, path: Path) -> None:
    """JUnit XML: a testsuite named after the scenario, a testcase per expectation; a run that broke
    off is one more testcase, in error."""
    outcomes = result.outcomes
    failures = sum(not o.passed for o in outcomes)
    errors = 1 if result.failure else 0
    suites = ElementTree.Element("testsuites", tests=str(len(outcomes) + errors), failures=str(failures),
                                 errors=str(errors), time=f"{result.wall_seconds:.3f}")
    suite = ElementTree.SubElement(suites, "testsuite", name=result.scenario.name, tests=str(len(outcomes) + errors),
                                   failures=str(failures), errors=str(errors), skipped="0",
                                   time=f"{result.wall_seconds:.3f}")
    properties = ElementTree.SubElement(suite, "properties")
    for name, value in (("seed", result.scenario.seed), ("runtime", result.runtime),
                        ("ticks", result.trace.ticks_done)):
        ElementTree.SubElement(properties, "property", name=name, value=str(value))
    for outcome in outcomes:
        case = ElementTree.SubElement(suite, "testcase", classname=f"hil.{result.scenario.name}", name=outcome.name,
                                      time="0")
        if not outcome.passed:
            failure = ElementTree.SubElement(case, "failure", type=outcome.kind,
                                             message=f"measured {outcome.measured}, bound {outcome.bound}")
            failure.text = outcome.detail or f"{outcome.name}: measured {outcome.measured}, bound {outcome.bound}"
    if result.failure:
        case = ElementTree.SubElement(suite, "testcase", classname=f"hil.{result.scenario.name}", name="run", time="0")
        ElementTree.SubElement(case, "error", type="run", message=result.failure.splitlines()[0]).text = result.failure
    ElementTree.indent(suites)
    ElementTree.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
