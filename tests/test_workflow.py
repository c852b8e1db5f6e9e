"""The GitHub Actions template: its own steps, run locally on a small submissions repository."""
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TUTORIAL6

DEMO = ROOT / "submissions" / "tutorial6"
WORKFLOW = yaml.safe_load(resources.files("grader.ci").joinpath("github-workflow.yml").read_text())
STEPS = WORKFLOW["jobs"]["grade"]["steps"]
PINNED = next(step for step in STEPS if step.get("id") == "pinned")  # the check of GRADER_PACKAGE


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A submissions repository: bob and carol pushed first; then bob changed his work and erin joined."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    shutil.copytree(TUTORIAL6, repo / "reference" / "tutorial6")
    for who in ("bob", "carol"):
        shutil.copytree(DEMO / who, repo / "submissions" / who)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first submissions")
    before = git(repo, "rev-parse", "HEAD")
    shutil.copy(DEMO / "alice" / "1e.h5", repo / "submissions" / "bob" / "1e.h5")
    (repo / "submissions" / "erin").mkdir()
    shutil.copy(DEMO / "erin_1b.h5", repo / "submissions" / "erin" / "1b.h5")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "bob's 1e, erin's 1b")
    return repo, before


def workflow_env(**extra) -> dict:
    """The environment of a step: this machine's (without a grading secret), the template's `env:` with
    GRADER_PACKAGE pointing at this checkout (a local path, which the template accepts), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    env.update(WORKFLOW["env"], GRADER_PACKAGE=str(ROOT))
    env.update(extra)
    return env


def run_step(step: dict, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run one step's shell script as GitHub's runner does: bash --noprofile --norc -eo pipefail."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


def run_workflow(repo: Path, tmp_path: Path, *, before: str, secret: str):
    """Run the template's shell steps as GitHub would (bash -eo pipefail, env, GITHUB_OUTPUT and
    GITHUB_STEP_SUMMARY files), with the expressions the runner would substitute.  The `uses:` actions
    (checkout, setup-python, upload-artifact, the test report) and the install step are GitHub's side;
    the check that GRADER_PACKAGE is pinned runs, on this checkout's path."""
    summary = tmp_path / "step-summary.md"
    summary.write_text("")
    outputs: dict[str, dict] = {}
    values = {"github.event.before": before, "secrets.GRADER_SECRET": secret}

    def expr(text: str) -> str:
        def sub(m):
            key = m.group(1).strip()
            if key.startswith("steps."):
                _, step, _, name = key.split(".")
                return outputs.get(step, {}).get(name, "")
            assert key in values, f"the test does not know the expression {key}"
            return values[key]
        return re.sub(r"\$\{\{(.*?)\}\}", sub, str(text))

    def condition(text: str) -> bool:
        text = expr(re.sub(r"^\s*always\(\)\s*&&\s*", "", str(text)))
        m = re.fullmatch(r"\s*(\S*)\s*!=\s*'([^']*)'\s*", text)
        assert m, f"the test cannot evaluate the condition {text!r}"
        return m.group(1) != m.group(2)

    ran = []
    for step in STEPS:
        if "uses" in step or step.get("id") == "install":
            continue
        if "if" in step and not condition(step["if"]):
            continue
        out_file = tmp_path / f"output-{len(ran)}"
        out_file.write_text("")
        env = workflow_env(**{k: expr(v) for k, v in step.get("env", {}).items()},
                           GITHUB_OUTPUT=str(out_file), GITHUB_STEP_SUMMARY=str(summary), GITHUB_ACTIONS="true",
                           PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        proc = run_step(step, repo, env)
        assert proc.returncode == 0, f"step {step.get('name')} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        if "id" in step:
            outputs[step["id"]] = dict(line.split("=", 1) for line in out_file.read_text().splitlines() if line)
        ran.append((step.get("name"), proc))
    return ran, summary.read_text(), repo / WORKFLOW["env"]["REPORTS"]


def test_with_the_secret_the_changed_submissions_are_graded(repo, tmp_path):
    from junitparser import Failure, JUnitXml

    repo, before = repo
    ran, summary, reports = run_workflow(repo, tmp_path, before=before, secret="ci-secret-value")
    assert [name for name, _ in ran][-1].startswith("Grade")
    xml = JUnitXml.fromfile(str(reports / "junit.xml"))
    suites = {s.name: s for s in xml}
    assert set(suites) == {"bob", "erin"}  # carol did not change
    bob_1e = next(c for c in suites["bob"] if c.name == "task 1e")
    assert not bob_1e.result  # his new 1e passes
    assert any(isinstance(r, Failure) for c in suites["erin"] for r in c.result)  # erin only did 1b
    assert "| bob | " in summary and "| erin | " in summary and "carol" not in summary
    assert (reports / "out" / "students" / "bob.html").exists()
    everything = summary + "".join(p.read_text(errors="replace") for p in reports.rglob("*") if p.is_file()
                                   and p.suffix in (".html", ".json", ".xml", ".md"))
    assert "ci-secret-value" not in everything and not list(reports.rglob(".grader-secret"))


def test_without_the_secret_the_workflow_checks_on_public_data_and_says_so(repo, tmp_path):
    from junitparser import JUnitXml

    repo, before = repo
    ran, summary, reports = run_workflow(repo, tmp_path, before=before, secret="")
    grade_step = ran[-1][1]
    assert "::warning::No GRADER_SECRET" in grade_step.stdout
    assert "public validation data" in summary and "| bob | " in summary and "| erin | " in summary
    assert {p.name for p in reports.glob("junit-*.xml")} == {"junit-bob.xml", "junit-erin.xml"}
    suite = next(iter(JUnitXml.fromfile(str(reports / "junit-bob.xml"))))
    assert suite.name == "bob" and len(list(suite)) == 11
    assert not (reports / "out").exists()  # nothing was graded


@pytest.mark.parametrize("package", [
    "grader",  # a bare name: whatever a package index serves under it
    "grader==1.2.0",
    "git+https://github.com/course/grader",  # a branch's head, whatever it holds at the time
    "git+https://github.com/course/grader@main",
    "git+https://github.com/course/grader@v1.2",
    "https://example.org/grader-1.2.0-py3-none-any.whl",
    "--index-url=https://example.org/simple/grader",
    WORKFLOW["env"]["GRADER_PACKAGE"],  # the template's placeholder, not yet set
])
def test_an_unpinned_grader_package_is_refused(package, tmp_path):
    proc = run_step(PINNED, tmp_path, workflow_env(GRADER_PACKAGE=package))
    assert proc.returncode != 0
    assert proc.stdout.startswith("::error::") and "GRADER_PACKAGE" in proc.stdout


@pytest.mark.parametrize("package", ["git+https://github.com/course/grader@" + "0123456789abcdef" * 2 + "01234567",
                                     str(ROOT), "./grader-1.2.0-py3-none-any.whl"])
def test_a_pinned_grader_package_is_accepted(package, tmp_path):
    (tmp_path / "grader-1.2.0-py3-none-any.whl").write_bytes(b"")
    proc = run_step(PINNED, tmp_path, workflow_env(GRADER_PACKAGE=package))
    assert proc.returncode == 0, proc.stdout + proc.stderr
