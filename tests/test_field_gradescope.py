"""The Gradescope bundle, built and run as Gradescope runs it, in a container whose sandbox cannot start.

The real zip of ``build_bundle`` is unpacked into a simulated ``/autograder`` (``GRADER_AUTOGRADER_ROOT``)
and its own ``run_autograder`` is run as root, from another folder, in a container without
``CAP_SYS_ADMIN`` and user namespaces (Docker's default, made real with ``setpriv --bounding-set`` and a
seccomp filter, ``test_field_root.DOCKER_DEFAULT``; no fake ``bwrap``).
``results.json`` must say at the top of ``output`` (what Gradescope shows) that the code was not run and
why, tag the tasks the script would answer "error", still grade the model file, and no student code runs.
(``setup.sh`` itself installs from the package index: tests/test_bundle.py covers what it installs.)
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TUTORIAL6
from test_field_root import DOCKER_DEFAULT

SECRET = "field-gradescope-test-secret-0123456789abcdef01234567"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not shutil.which("setpriv"),
                                reason="Gradescope runs as root, with bubblewrap")


def test_a_container_without_cap_sys_admin_gets_a_visible_message_not_silent_zeros(tmp_path):
    from grader.gradescope import build_bundle
    from grader.spec import load_assignment

    bundle = build_bundle(TUTORIAL6, tmp_path / "autograder.zip", secret=SECRET)
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "results").mkdir()
    subprocess.run(["unzip", "-q", str(bundle), "-d", str(root / "source")], check=True)  # as Gradescope does
    mark = root / "student-code-ran"
    (root / "submission" / "nb.py").write_text(f"# %%\nopen({str(mark)!r}, 'w').write('ran')\n")
    shutil.copy(ROOT / "submissions" / "tutorial6" / "bob" / "2a.h5", root / "submission")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "GRADER_AUTOGRADER_ROOT": str(root), "GRADER_BIN": str(Path(sys.executable).parent / "grader")}
    # Docker's default: no CAP_SYS_ADMIN, and seccomp refuses user namespaces (else root drops to uid 65534)
    done = subprocess.run([*DOCKER_DEFAULT, str(root / "source" / "run_autograder")], env=env, cwd="/",
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    staff = " ".join(done.stderr.split())  # the autograder's output, which Gradescope shows to staff
    assert "NO SANDBOX" in staff and "Creating new namespace failed: Operation not permitted" in staff

    results = json.loads((root / "results" / "results.json").read_text())
    output = " ".join(results["output"].split())
    assert output.startswith("<p><strong>Your code was not run:</strong>")
    assert "Creating new namespace failed" in output and "course staff must fix the autograder" in output
    assert "docker run --cap-add SYS_ADMIN --security-opt seccomp=unconfined" in output  # what fixes it
    assert not mark.exists()
    tests = {t["number"]: t for t in results["tests"]}
    points_2a = load_assignment(TUTORIAL6).task("2a").points
    assert tests["2a"]["score"] == points_2a and results["score"] == points_2a  # the model file is graded
    unanswered = [t for n, t in tests.items() if n != "2a"]
    assert unanswered and all("error" in t["tags"] and "Could not be graded" in t["output"] for t in unanswered)
