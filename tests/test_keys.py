"""The cache keys' code sets: a change to what draws the pages re-draws them (``store.keys.REPORTING_CODE``)."""
from __future__ import annotations

from test_boundaries import PACKAGE, _imports, _modules
from grader.store import keys

#: modules the report imports that put nothing on a page: errors, the log, the package (its version is in the
#: measure key, ``keys.build_id``)
DRAW_NOTHING = {"grader", "grader.errors", "grader.logs"}


def _covered(parts) -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in keys.code_files(parts)}


def _path(modules, name: str) -> str:
    return modules[name].relative_to(PACKAGE).as_posix()


def test_the_report_key_covers_every_template_and_module_the_pages_read():
    redrawn = _covered(keys.REPORTING_CODE)
    templates = {p.relative_to(PACKAGE).as_posix() for folder in ("report/templates", "serve/templates")
                 for p in (PACKAGE / folder).iterdir() if p.is_file()}
    assert templates and not templates - redrawn, sorted(templates - redrawn)  # the work page's too
    assert "executed.py" in redrawn  # the notebook as it ran, drawn with serve's templates
    modules = _modules()
    read = set()
    for name, path in modules.items():
        if name == "grader.report" or name.startswith("grader.report."):
            read |= _imports(name, path, modules)
    redone = _covered(keys.MEASURING_CODE) | _covered(keys.SCORING_CODE)  # re-grades a student, so draws again
    uncovered = sorted(name for name in read - DRAW_NOTHING
                       if _path(modules, name) not in redrawn | redone)
    assert "grader.executed" in read and not uncovered, uncovered

