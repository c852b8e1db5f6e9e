"""Exports: what LMSs and CI read, written from the gradebook (never from a grading run).

* ``grades.csv``: one row per student, a column per task, the total and the
  maximum; a gradebook import in Canvas or Moodle maps ``student_id`` to the
  student and picks the ``total`` (or task) columns.
* ``gradescope/<student>/results.json``: Gradescope's autograder results
  format (``score``, ``output``, ``visibility`` and ``tests``, each with
  ``name``, ``number``, ``score``, ``max_score``, ``status``, ``output``,
  ``visibility``).
* ``junit.xml``: a ``testsuite`` per student and a ``testcase`` per task; a
  task short of full marks is a ``failure`` carrying its message, one the
  grader could not grade an ``error``, an optional task not attempted is
  ``skipped``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import OutputError
from ..report import safe_name

FORMATS = ("csv", "gradescope", "junit")


def _write(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _fmt(x: float) -> str:
    return f"{x:g}"


def grades_csv(tasks: list[dict], students: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_id", *[f"task_{t['id']}" for t in tasks], "total", "max_score"])
    for s in students:
        by_id = {t["id"]: t for t in s["tasks"]}
        w.writerow([s["id"], *[_fmt(by_id[t["id"]]["score"]) if t["id"] in by_id else "" for t in tasks],
                    _fmt(s["score"]), _fmt(s["max_score"])])
    return buf.getvalue()


def gradescope(student: dict, visibility: str = "visible") -> dict:
    tests = []
    for t in student["tasks"]:
        tests.append({"name": f"Task {t['id']}: {t.get('title', '')}".rstrip(": "), "number": t["id"],
                      "score": t["score"], "max_score": t["max_score"],
                      "status": "passed" if t["status"] == "passed" else "failed",
                      "output": t["message"], "visibility": visibility,
                      "tags": [t["status"]] + (["optional"] if t.get("optional") else [])})
    notes = "\n".join(student.get("notes", []))
    return {"score": student["score"], "output": notes or f"Score {_fmt(student['score'])} of "
            f"{_fmt(student['max_score'])}.", "visibility": visibility, "stdout_visibility": "hidden",
            "tests": tests}


def junit_xml(assignment_id: str, students: list[dict]) -> str:
    root = ET.Element("testsuites", name=f"grader {assignment_id}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in students:
        suite = ET.SubElement(root, "testsuite", name=s["id"])
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="score", value=_fmt(s["score"]))
        ET.SubElement(props, "property", name="max_score", value=_fmt(s["max_score"]))
        for t in s["tasks"]:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"{assignment_id}.{s['id']}",
                                 name=f"task {t['id']}", time="0")
            summary = f"{_fmt(t['score'])}/{_fmt(t['max_score'])} points ({t['status']})"
            if t["status"] == "passed":
                pass
            elif t["status"] == "error":
                counts["errors"] += 1
                ET.SubElement(case, "error", message=summary, type=t["status"]).text = t["message"]
            elif t["status"] == "missing" and t.get("optional"):
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=t["message"])
            else:
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=summary, type=t["status"]).text = t["message"]
            ET.SubElement(case, "system-out").text = f"{summary}. {t['message']}"
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", "0")
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def export(gradebook, assignment_id: str, to: Path, formats=FORMATS) -> list[Path]:
    """Write the chosen exports of one assignment from the gradebook into ``to``; returns the files."""
    tasks = gradebook.tasks(assignment_id)
    students = gradebook.results(assignment_id)
    to = Path(to)
    written = []
    if "csv" in formats:
        written.append(_write(to / "grades.csv", grades_csv(tasks, students)))
    if "gradescope" in formats:
        for s in students:
            written.append(_write(to / "gradescope" / safe_name(s["id"]) / "results.json",
                                  json.dumps(gradescope(s), indent=2, ensure_ascii=False) + "\n"))
    if "junit" in formats:
        written.append(_write(to / "junit.xml", junit_xml(assignment_id, students)))
    return written
