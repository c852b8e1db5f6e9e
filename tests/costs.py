"""What each test module costs, so that the suite's processes start the costliest first (``conftest``).

``make test`` runs the modules in 2 processes, one module's tests in one process; a costly module started last
leaves the other process idle for its whole length.  ``module_seconds.json`` holds each module's seconds from a
measured run; ``python tests/costs.py JUNIT.xml`` writes it again from a run's ``--junitxml`` report
(``make test-costs``).  A module it does not name costs ``UNKNOWN_SECONDS``: a new module runs early rather than
last.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

TABLE = Path(__file__).with_name("module_seconds.json")

#: the cost of a module that no measured run named
UNKNOWN_SECONDS = 60.0


def load() -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(TABLE.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def seconds(table: dict[str, float], module: str) -> float:
    return table.get(module, UNKNOWN_SECONDS)


def from_junit(path: Path) -> dict[str, float]:
    """Each module's seconds (its tests' set-up, call and tear-down) from a pytest ``--junitxml`` report."""
    import xml.etree.ElementTree as ElementTree

    total = defaultdict(float)
    for case in ElementTree.parse(path).iter("testcase"):
        module = case.get("classname", "").split(".")
        name = next((part for part in module if part.startswith("test_")), None)
        if name:
            total[name] += float(case.get("time") or 0)
    return {name: round(s, 1) for name, s in sorted(total.items(), key=lambda item: -item[1])}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/costs.py JUNIT.xml")
    table = from_junit(Path(sys.argv[1]))
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{TABLE}: {len(table)} modules, {sum(table.values()):.0f} s in all")
