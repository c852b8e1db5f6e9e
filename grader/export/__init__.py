"""Exports: what LMSs and CI read, written from the gradebook (never from a grading run).

* ``grades.csv``: one row per student and always the same columns
  (``student_id``, ``task_<id>`` per task, then ``CSV_COLUMNS``): the task
  scores, their sum, what optional tasks brought above the maximum (capped),
  the total they leave, the maximum, the letter grade and the overridden
  tasks; a gradebook import in Canvas or Moodle maps ``student_id`` to the
  student and picks the ``total`` (or task) columns.
* ``gradescope/<student>/results.json``: Gradescope's autograder results
  format (``score``, ``output``, ``visibility`` and ``tests``, each with
  ``name``, ``number``, ``score``, ``max_score``, ``status``, ``output``,
  ``visibility``).
* ``junit.xml``: a ``testsuite`` per student and a ``testcase`` per task; a
  task short of full marks is a ``failure`` carrying its message, one the
  grader could not grade an ``error``, an optional task not attempted is
  ``skipped``.
* ``summary.md``: a Markdown table of scores and task statuses, with what to
  fix per student, for ``$GITHUB_STEP_SUMMARY`` or a pull-request comment.

A task whose score a TA set on review (``grader override``) is marked in each:
the ``overridden`` column of the CSV (the task ids, ``(needs review)`` after one
whose automatic score has changed since), the tags ``overridden`` and
``needs_review`` in Gradescope, ``overridden`` in the JUnit case's summary, a
✎ in the Markdown table; every message starts with the override's reason
and the grader's own score (``store.overrides.describe``).

Ids, messages and notes are partly chosen by students, so every export makes
them inert for its reader (``grader.textsafe``): no spreadsheet formulas in
the CSV, only characters XML 1.0 allows in the JUnit file, no Markdown or HTML
in the summary, and a distinct, harmless folder name per student; in none of
them a raw control (ESC) or bidirectional (U+202E) character: those are shown
as escapes (``\\u202e``).
"""
from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ..report import atomic_write, safe_name
from ..textsafe import html_line, json_text, markdown_text, shown, spreadsheet_cell, xml_text

FORMATS = ("csv", "gradescope", "junit", "markdown")
STATUS_ICON = {"passed": "✅", "partial": "🟡", "failed": "❌", "missing": "⬜", "error": "⚠️"}
OVERRIDE_ICON = "✎"  # after a status icon: the score was set on review by a TA


def _fmt(x: float) -> str:
    """A score as the exports write it: a plain number, never text."""
    return f"{x:g}"


def _overridden(student: dict) -> list[str]:
    """The student's overridden tasks, ``"2a"``, or ``"2a (needs review)"`` when its automatic score changed."""
    return [t["id"] + (" (needs review)" if t["override"]["needs_review"] else "")
            for t in student["tasks"] if t.get("override")]


#: grades.csv's columns after the tasks', always these, in this order (an LMS import is mapped once)
CSV_COLUMNS = ("tasks_sum", "capped", "total", "max_score", "grade", "overridden")


def grades_csv(tasks: list[dict], students: list[dict]) -> str:
    """The gradebook import: a row per student, always the same columns (``CSV_COLUMNS``): ``task_<id>`` per
    task, ``tasks_sum`` (their sum), ``capped`` (what optional tasks brought above ``max_score``, not
    counted), ``total`` (``tasks_sum - capped``), ``max_score``, ``grade`` (the letter, empty without grade
    bands) and ``overridden`` (the tasks a TA scored, empty when none).  Text cells can never be a formula."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_id", *[f"task_{t['id']}" for t in tasks], *CSV_COLUMNS])
    for s in students:
        by_id = {t["id"]: t for t in s["tasks"]}
        tasks_sum = round(math.fsum(t["score"] for t in s["tasks"]), 2)
        w.writerow([spreadsheet_cell(s["id"]),
                    *[_fmt(by_id[t["id"]]["score"]) if t["id"] in by_id else "" for t in tasks],
                    _fmt(tasks_sum), _fmt(max(0.0, round(tasks_sum - s["score"], 2))), _fmt(s["score"]),
                    _fmt(s["max_score"]), spreadsheet_cell(s.get("grade") or ""),
                    spreadsheet_cell("; ".join(_overridden(s)))])
    return buf.getvalue()


def gradescope(student: dict, visibility: str = "visible") -> dict:
    """One student's Gradescope autograder ``results.json`` (JSON escapes whatever the text holds)."""
    tests = []
    for t in student["tasks"]:
        override = t.get("override")
        tags = [t["status"]] + (["optional"] if t.get("optional") else []) + (["overridden"] if override else []) \
            + (["needs_review"] if override and override["needs_review"] else [])
        tests.append({"name": f"Task {t['id']}: {t.get('title', '')}".rstrip(": "), "number": t["id"],
                      "score": t["score"], "max_score": t["max_score"],
                      "status": "passed" if t["status"] == "passed" else "failed",
                      "output": t["message"], "visibility": visibility, "tags": tags})
    head = f"Score {_fmt(student['score'])} of {_fmt(student['max_score'])}" + (
        f", grade {student['grade']}." if student.get("grade") else ".")
    if student.get("automatic"):
        head += (f" Task(s) {', '.join(t['id'] for t in student['tasks'] if t.get('override'))} were scored on "
                 f"review by a TA; the grader's own score was {_fmt(student['automatic']['score'])}.")
    from ..review import COULD_NOT_GRADE, INTERNAL_ERROR

    unrun = [t["id"] for t in student["tasks"] if t["status"] == "error" and not t.get("override")
             and t["message"].startswith((COULD_NOT_GRADE, INTERNAL_ERROR))]
    if unrun:
        head += (f" Could not be graded: task(s) {', '.join(unrun)} (see each task's message); their 0 points are "
                 "not a verdict on your work, and course staff will re-run the grading.")
    notes = "\n".join([head, *student.get("notes", [])])
    return {"score": student["score"], "output": notes, "visibility": visibility, "stdout_visibility": "hidden",
            "tests": tests}


def junit_xml(assignment_id: str, students: list[dict]) -> str:
    """The JUnit report: a suite per student, a case per task; every text and attribute is XML 1.0."""
    root = ET.Element("testsuites", name=f"grader {assignment_id}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in students:
        suite = ET.SubElement(root, "testsuite", name=s["id"])
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="score", value=_fmt(s["score"]))
        ET.SubElement(props, "property", name="max_score", value=_fmt(s["max_score"]))
        if s.get("automatic"):
            ET.SubElement(props, "property", name="automatic_score", value=_fmt(s["automatic"]["score"]))
            ET.SubElement(props, "property", name="overridden", value="; ".join(_overridden(s)))
        for t in s["tasks"]:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"{assignment_id}.{s['id']}",
                                 name=f"task {t['id']}", time="0")
            overridden = (", overridden on review" + (", needs review" if t["override"]["needs_review"] else "")) \
                if t.get("override") else ""
            summary = f"{_fmt(t['score'])}/{_fmt(t['max_score'])} points ({t['status']}{overridden})"
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
    _xml_safe(root)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _xml_safe(root: ET.Element) -> None:
    """Make every text, tail and attribute value under ``root`` one XML 1.0 allows (ElementTree would
    write an ESC in a student id as it is, and no parser would read the file)."""
    for el in root.iter():
        if el.text:
            el.text = xml_text(el.text)
        if el.tail:
            el.tail = xml_text(el.tail)
        for key, value in el.attrib.items():
            el.set(key, xml_text(value))


def markdown_summary(title: str, tasks: list[dict], students: list[dict], note: str = "") -> str:
    """The Markdown summary: a table row per student and, in a ``<details>`` block each, the tasks to look
    at.  Every text is escaped for where it goes: Markdown in the table and lists, HTML in ``<summary>``."""
    lines = [f"## {markdown_text(title)}", ""]
    if note:
        lines += [f"> {markdown_text(note)}", ""]
    if not students:
        return "\n".join(lines + ["No submissions were graded.", ""])
    ids = [t["id"] for t in tasks] or [t["id"] for t in students[0]["tasks"]]
    graded = any("grade" in s for s in students)
    lines.append("| student | score | " + ("grade | " if graded else "") + " | ".join(ids) + " |")
    lines.append("|---|---:|" + (":-:|" if graded else "") + "|".join(":-:" for _ in ids) + "|")
    for s in students:
        by_id = {t["id"]: t for t in s["tasks"]}
        icons = [STATUS_ICON.get(by_id[i]["status"], "?") + (OVERRIDE_ICON if by_id[i].get("override") else "")
                 if i in by_id else "" for i in ids]
        grade = f"{markdown_text(s.get('grade') or '')} | " if graded else ""
        lines.append(f"| {markdown_text(s['id'])} | {_fmt(s['score'])} / {_fmt(s['max_score'])} | {grade}"
                     + " | ".join(icons) + " |")
    legend = " ".join(f"{icon} {status}" for status, icon in STATUS_ICON.items())
    if any(t.get("override") for s in students for t in s["tasks"]):
        legend += f" {OVERRIDE_ICON} score set on review by a TA"
    lines += ["", legend, ""]
    for s in students:
        todo = [t for t in s["tasks"] if t.get("override") or
                (t["status"] != "passed" and not (t["status"] == "missing" and t.get("optional")))]
        if todo:
            lines += [f"<details><summary>{html_line(s['id'])}: {len(todo)} task(s) to look at</summary>", ""]
            lines += [f"- **{markdown_text(t['id'])}** ({t['status']}{', overridden' if t.get('override') else ''}, "
                      f"{_fmt(t['score'])}/{_fmt(t['max_score'])}): {markdown_text(t['message'])}" for t in todo]
            lines += ["", "</details>", ""]
    return "\n".join(lines) + "\n"


def export(gradebook, assignment_id: str, to: Path, formats=FORMATS) -> list[Path]:
    """Write the chosen exports of one assignment from the gradebook into ``to``; returns the files."""
    tasks = gradebook.tasks(assignment_id)
    students = gradebook.results(assignment_id)
    to = Path(to)
    written = []
    if "csv" in formats:
        written.append(atomic_write(to / "grades.csv", grades_csv(tasks, students)))
    if "gradescope" in formats:
        for s in students:
            written.append(atomic_write(to / "gradescope" / safe_name(s["id"]) / "results.json",
                                        json_text(shown(gradescope(s)), indent=2) + "\n"))
    if "junit" in formats:
        written.append(atomic_write(to / "junit.xml", junit_xml(assignment_id, students)))
    if "markdown" in formats:
        title = f"{assignment_id}: {len(students)} submission(s) graded"
        written.append(atomic_write(to / "summary.md", markdown_summary(title, tasks, students)))
    return written
