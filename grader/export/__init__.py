"""Exports: what LMSs and CI read, written from the gradebook (never from a grading run).

``FORMATS`` is the table of formats: ``csv`` (``grades.csv``), ``gradescope`` (``gradescope/<student>/
results.json``, written by ``gradescope_results``, the one writer of that file), ``junit`` (``junit.xml``) and
``markdown`` (``summary.md``).  Overridden tasks are marked in each; student-chosen text is made inert for
each reader (``grader.textsafe``).  Each format's columns and marks: docs/design/export.md.
"""
from __future__ import annotations

import csv
import html
import io
import math
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..report import atomic_write, safe_name
from ..textsafe import html_line, json_text, markdown_text, shown, spreadsheet_cell, xml_text

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


def gradescope_results(student: dict, seconds: float | None = None, visibility: str = "visible") -> dict:
    """One student's Gradescope ``results.json`` (``StudentResult.to_json()``, or a gradebook row with its
    overrides): the feedback and each task's message as HTML, escaped; ``execution_time`` when the run's
    ``seconds`` are known.  Written by ``write_gradescope_results`` alone (JSON escapes whatever text holds)."""
    tests = []
    for t in student["tasks"]:
        override = t.get("override")
        tags = [t["status"]] + (["optional"] if t.get("optional") else []) + (["overridden"] if override else []) \
            + (["needs_review"] if override and override["needs_review"] else [])
        tests.append({"name": f"Task {t['id']}: {t.get('title', '')}".rstrip(": "), "number": t["id"],
                      "score": t["score"], "max_score": t["max_score"],
                      "status": "passed" if t["status"] == "passed" else "failed",
                      "output": html.escape(t["message"]), "output_format": "html", "visibility": visibility,
                      "tags": tags})
    results = {"score": student["score"], "output": feedback_html(student), "output_format": "html",
               "visibility": visibility, "stdout_visibility": "hidden", "tests": tests}
    if seconds is not None:  # a run's results: its time, and each test's (not measured apart)
        results = {"score": student["score"], "execution_time": round(seconds, 1), **results}
        for test in tests:
            test["execution_time"] = 0
    return results


def feedback_html(student: dict) -> str:
    """The student's feedback as an HTML fragment Gradescope shows above the tests (everything escaped)."""
    from ..review import COULD_NOT_GRADE, INTERNAL_ERROR

    e = html.escape
    rows = "".join(f"<tr><td>{e(t['id'])}</td><td>{e(t['status'])}</td><td>{t['score']:g} / {t['max_score']:g}</td>"
                   f"<td>{e(t['message'])}</td></tr>" for t in student["tasks"])
    notes = "".join(f"<li>{e(n)}</li>" for n in student.get("notes", []))
    failures = "".join(f"<li>{e(nb['name'])}, cell {f['cell']}: {e(f['explanation'])}</li>"
                       for nb in student.get("notebooks", []) for f in nb.get("failures", []))
    grade = f", grade {e(student['grade'])}" if student.get("grade") else ""
    parts = [f"<p><strong>Score {student['score']:g} of {student['max_score']:g}{grade}.</strong></p>",
             f"<table><tr><th>task</th><th>status</th><th>points</th><th>what to do</th></tr>{rows}</table>"]
    unrun = [t["id"] for t in student["tasks"] if t["status"] == "error" and not t.get("override")
             and t["message"].startswith((COULD_NOT_GRADE, INTERNAL_ERROR))]
    if unrun:
        parts.insert(1, f"<p><strong>Could not be graded: task(s) {e(', '.join(unrun))}.</strong> The grader could "
                        "not grade them (see each task's message); their 0 points are not a verdict on your work, "
                        "and course staff will re-run the grading.</p>")
    if student.get("automatic"):
        overridden = ", ".join(t["id"] for t in student["tasks"] if t.get("override"))
        parts.insert(1, f"<p>Task(s) {e(overridden)} were scored on review by a TA; the grader's own score was "
                        f"{_fmt(student['automatic']['score'])}.</p>")
    if failures:
        parts.append(f"<p>Cells that failed:</p><ul>{failures}</ul>")
    if notes:
        parts.append(f"<p>Notes:</p><ul>{notes}</ul>")
    return "".join(parts)


def write_gradescope_results(path: Path, results: dict) -> Path:
    """Write Gradescope's ``results.json`` (``gradescope_results``) at ``path``, whole or not at all, after
    removing whatever is there (a file, a link, a folder; a link is never followed).  Every string is shown
    as the student reads it: controls and bidirectional characters as escapes."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    return atomic_write(path, json_text(shown(results), indent=2) + "\n")


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


@dataclass(frozen=True)
class Format:
    """An export format: what it writes under the export folder (``target``) and how."""
    target: str
    write: Callable  # (to, assignment_id, tasks, students) -> the files written


def _write_csv(to: Path, assignment_id: str, tasks: list[dict], students: list[dict]) -> list[Path]:
    return [atomic_write(to / "grades.csv", grades_csv(tasks, students))]


def _write_gradescope(to: Path, assignment_id: str, tasks: list[dict], students: list[dict]) -> list[Path]:
    return [write_gradescope_results(to / "gradescope" / safe_name(s["id"]) / "results.json", gradescope_results(s))
            for s in students]


def _write_junit(to: Path, assignment_id: str, tasks: list[dict], students: list[dict]) -> list[Path]:
    return [atomic_write(to / "junit.xml", junit_xml(assignment_id, students))]


def _write_markdown(to: Path, assignment_id: str, tasks: list[dict], students: list[dict]) -> list[Path]:
    title = f"{assignment_id}: {len(students)} submission(s) graded"
    return [atomic_write(to / "summary.md", markdown_summary(title, tasks, students))]


#: the export formats, in the order they are written
FORMATS = {"csv": Format("grades.csv", _write_csv), "gradescope": Format("gradescope", _write_gradescope),
           "junit": Format("junit.xml", _write_junit), "markdown": Format("summary.md", _write_markdown)}


def export(gradebook, assignment_id: str, to: Path, formats=tuple(FORMATS)) -> list[Path]:
    """Write the chosen exports of one assignment from the gradebook into ``to``; returns the files."""
    tasks = gradebook.tasks(assignment_id)
    students = gradebook.results(assignment_id)
    to = Path(to)
    written = []
    for name, fmt in FORMATS.items():
        if name in formats:
            written.extend(fmt.write(to, assignment_id, tasks, students))
    return written
