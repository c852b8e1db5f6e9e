"""The GitHub Actions template: its own jobs and steps, run locally on a small submissions repository.

Each simulated run checks out a fresh clone per job (as GitHub's runners do), evaluates the `if:` and `${{ }}`
expressions the template uses, and keeps the Actions cache between runs (``Cache``): what the template saves
with actions/cache/save is what the next run restores."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TUTORIAL6
from grader.ci import template, workflow_text
from grader.spec import assignment_digest, load_assignment

DEMO = ROOT / "submissions" / "tutorial6"
WORKFLOW = yaml.safe_load(template())
JOBS = WORKFLOW["jobs"]
PINNED = next(step for step in JOBS["decide"]["steps"] if step.get("id") == "pinned")
SECRET = "ci-secret-value-" + "5f3a9c" * 8
PINNED_URL = "git+https://github.com/course/grader@" + "0123456789abcdef" * 2 + "01234567"


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", ".")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    """A submissions repository: bob and carol pushed first; then bob changed his work and erin joined."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    shutil.copytree(TUTORIAL6, repo / "reference" / "tutorial6", ignore=shutil.ignore_patterns("__pycache__"))
    for who in ("bob", "carol"):
        shutil.copytree(DEMO / who, repo / "submissions" / who)
    git(repo, "init", "-q")
    before = commit(repo, "first submissions")
    shutil.copy(DEMO / "alice" / "1e.h5", repo / "submissions" / "bob" / "1e.h5")
    (repo / "submissions" / "erin").mkdir()
    shutil.copy(DEMO / "erin_1b.h5", repo / "submissions" / "erin" / "1b.h5")
    commit(repo, "bob's 1e, erin's 1b")
    return repo, before


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The grader the runs use, as a runner has it installed: a copy of this checkout's package taken once, so
    that edits to the working tree while the module runs do not change the code (and the gradebook's keys,
    which hash the grader's code) from one simulated run to the next."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "grader", site / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    return site


@pytest.fixture
def repo_env(repo, installed) -> tuple[Path, str, dict]:
    """The repository, the commit before its last push, and the workflow's `env:` (``pinned_env``) with the
    installed grader first on the path."""
    repo, before = repo
    return repo, before, dict(pinned_env(repo), PYTHONPATH=str(installed))


def pinned_env(repo: Path) -> dict:
    """The template's `env:` as `grader workflow -a reference/tutorial6` fills it in for this repository, with
    GRADER_PACKAGE set to a pinned commit (the runs install nothing: the grader is this checkout's copy)."""
    text, digest = workflow_text(repo / "reference" / "tutorial6", repo_root=repo)
    env = dict(yaml.safe_load(text)["env"], GRADER_PACKAGE=PINNED_URL)
    assert env["GRADER_ASSIGNMENT_SHA256"] == digest and env["ASSIGNMENT"] == "reference/tutorial6"
    return env


def step_env(workflow_env: dict, **extra) -> dict:
    """A step's environment: this machine's (without a grading secret), the workflow's `env:`, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "GRADER_SECRET"}
    env.update(workflow_env)
    env.update(extra)
    return env


def run_step(step: dict, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run one step's shell script as GitHub's runner does: bash --noprofile --norc -eo pipefail."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


class Cache:
    """The Actions cache of the repository, between runs: a key's folder is written once (as GitHub's keys
    are immutable); a restore takes the exact key, else the newest entry starting with a restore key."""

    def __init__(self, root: Path):
        self.root, self.keys = root, []

    def save(self, key: str, path: Path) -> None:
        if key in self.keys or not path.exists():
            return
        shutil.copytree(path, self.root / str(len(self.keys)))
        self.keys.append(key)

    def restore(self, key: str, prefixes: list[str], path: Path) -> bool:
        found = [i for i, k in enumerate(self.keys) if k == key] or \
            [i for i, k in enumerate(self.keys) if any(k.startswith(p) for p in prefixes)]
        if not found:
            return False
        shutil.copytree(self.root / str(found[-1]), path)
        return True


class Run:
    """One run of the workflow: the event, its expressions' values, each job's steps as they ran."""

    def __init__(self, repo: Path, tmp: Path, cache: Cache, env: dict, *, event: str, before: str = "",
                 secret: str = SECRET, inputs: dict | None = None, run_id: int = 1, cancelled: tuple = (),
                 ref: str = "refs/heads/main"):
        self.repo, self.tmp, self.cache, self.env = repo, tmp, cache, env
        self.cancelled = cancelled  # jobs GitHub cancelled before they began (a concurrency group's queue)
        self.results: dict[str, str] = {}  # needs.<job>.result
        self.values = {"github.event_name": event, "github.event.before": before, "secrets.GRADER_SECRET": secret,
                       "github.run_id": str(run_id), "github.run_attempt": "1", "github.actor": "ta-on-duty",
                       "github.triggering_actor": "ta-on-duty", "vars.GRADER_TAS": "ta-on-duty",
                       "github.ref": ref, "github.event.repository.default_branch": "main",
                       "github.run_number": str(run_id), "github.token": "ghs-token-of-the-run",
                       "runner.os": "Linux", **{f"env.{k}": v for k, v in env.items()},
                       **{f"inputs.{k}": v for k, v in (inputs or {}).items()}}
        tmp.mkdir(parents=True, exist_ok=True)
        self.summary = tmp / "step-summary.md"
        self.summary.write_text("")
        self.needs: dict[str, dict] = {}
        self.steps: dict[str, list] = {}  # job -> [(name, CompletedProcess, env)]
        self.workspaces: dict[str, Path] = {}
        self.run()

    def value(self, key: str, outputs: dict) -> str:
        if key.startswith("steps."):
            _, step, what, *name = key.split(".")  # steps.<id>.outputs.<name>, steps.<id>.outcome
            found = outputs.get(step, {}).get(what, {} if name else "")
            return found.get(name[0], "") if name else found
        if key.startswith("needs.") and key.endswith(".result"):
            return self.results.get(key.split(".")[1], "skipped")
        if key.startswith("needs."):
            _, job, _, name = key.split(".")
            return self.needs.get(job, {}).get(name, "")
        if key.startswith("inputs."):
            return self.values.get(key, "")
        assert key in self.values, f"the test does not know the expression {key}"
        return self.values[key]

    def expr(self, text: str, outputs: dict) -> str:
        def sub(m):
            inner = m.group(1).strip()
            if re.search(r"(==|!=)", inner):
                return "true" if self.condition(inner, outputs, ok=True) else "false"
            return self.value(inner, outputs)
        return re.sub(r"\$\{\{(.*?)\}\}", sub, str(text))

    def condition(self, text: str, outputs: dict, *, ok: bool) -> bool:
        """An `if:`: terms joined by &&, each always(), or a context value compared (==, !=) with a literal.
        Without always(), a step runs only while every step before it succeeded (success())."""
        terms = [t.strip() for t in str(text).split("&&")]
        always = "always()" in terms
        result = ok or always
        for term in terms:
            if term == "always()":
                continue
            m = re.fullmatch(r"(\S+)\s*(==|!=)\s*'([^']*)'", term)
            assert m, f"the test cannot evaluate the condition {term!r}"
            value = self.value(m.group(1), outputs)
            result = result and ((value == m.group(3)) == (m.group(2) == "=="))
        return result

    def run(self) -> None:
        for name in ("decide", "check", "grade", "unapplied"):
            job = JOBS[name]
            if "if" in job and not self.condition(job["if"], {}, ok=True):
                self.results[name] = "skipped"
            elif name in self.cancelled:
                self.results[name] = "cancelled"
            else:
                self.run_job(name, job)

    def run_job(self, name: str, job: dict) -> None:
        workspace = self.tmp / f"ws-{name}"
        git(self.tmp, "clone", "-q", str(self.repo), str(workspace))  # actions/checkout: a fresh runner
        self.workspaces[name] = workspace
        outputs: dict[str, dict] = {}
        ran, ok = [], True
        for i, step in enumerate(job["steps"]):
            sid = step.get("id", f"step{i}")
            if "if" in step and not self.condition(step["if"], outputs, ok=ok) or "if" not in step and not ok:
                outputs[sid] = {"outcome": "skipped", "outputs": {}}
                continue
            uses = step.get("uses", "")
            if uses.startswith("actions/cache/"):  # the gradebook's cache, kept by the test between runs
                w = {k: self.expr(v, outputs) for k, v in step["with"].items()}
                if uses.startswith("actions/cache/save"):
                    self.cache.save(w["key"], workspace / w["path"])
                else:
                    self.cache.restore(w["key"], w.get("restore-keys", "").split(), workspace / w["path"])
                outputs[sid] = {"outcome": "success", "outputs": {}}
                continue
            if uses or step.get("id") == "install":  # GitHub's side: checkout, setup-python, pip's cache, uploads
                continue
            out_file = self.tmp / f"output-{name}-{i}"
            out_file.write_text("")
            env = step_env(self.env, **{k: self.expr(v, outputs) for k, v in step.get("env", {}).items()},
                           GITHUB_OUTPUT=str(out_file), GITHUB_STEP_SUMMARY=str(self.summary), GITHUB_ACTIONS="true",
                           PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
            proc = run_step(step, workspace, env)
            ok = ok and proc.returncode == 0
            outputs[sid] = {"outcome": "success" if proc.returncode == 0 else "failure",
                            "outputs": dict(line.split("=", 1) for line in out_file.read_text().splitlines() if line)}
            ran.append((step.get("name"), proc, env))
        self.steps[name] = ran
        self.results[name] = "success" if ok else "failure"
        self.needs[name] = {k: self.expr(v, outputs) for k, v in job.get("outputs", {}).items()}

    def step(self, job: str, prefix: str):
        return next(proc for name, proc, _ in self.steps[job] if name.startswith(prefix))


def graded(run: Run) -> tuple[int, int, int]:
    """What the grading step did: (students run, re-scored, unchanged)."""
    text = run.step("grade", "Grade").stderr
    m = re.search(r"\((\d+) run, (\d+) re-scored, (\d+) unchanged\)", text)
    assert m, text[-3000:]
    return tuple(int(g) for g in m.groups())


def everything_written(run: Run) -> str:
    """Every text file the run left in its workspaces, and its step summary."""
    return run.summary.read_text() + "".join(
        p.read_text(errors="replace") for ws in run.workspaces.values() for p in ws.rglob("*")
        if p.is_file() and ".git" not in p.parts and p.suffix in (".html", ".json", ".xml", ".md", ".csv", ".log"))


def test_with_the_secret_the_class_is_graded_and_its_gradebook_carries_over(repo_env, tmp_path):
    """Three runs: a push, a manual run that overrides a score, a push in which dave joins.  The gradebook the
    first run saved is restored by the next: the override stands, nobody is run again, and dave's 1c is found
    identical to carol's, graded two runs before."""
    import csv

    from junitparser import Failure, JUnitXml

    from grader.api import review_gradebook

    repo, before, env = repo_env
    cache = Cache(tmp_path / "cache")
    first = Run(repo, tmp_path / "run1", cache, env, event="push", before=before, run_id=1)
    assert first.needs["decide"] == {"mode": "grade", "count": "2", "why": ""}
    assert "check" not in first.steps and any(n.startswith("Grade the class") for n, _, _ in first.steps["grade"])
    assert graded(first) == (3, 0, 0)
    reports = first.workspaces["grade"] / env["REPORTS"]
    suites = {s.name: s for s in JUnitXml.fromfile(str(reports / "junit.xml"))}
    assert set(suites) == {"bob", "carol", "erin"}  # the whole class, from its gradebook
    assert not next(c for c in suites["bob"] if c.name == "task 1e").result  # his new 1e passes
    assert any(isinstance(r, Failure) for c in suites["erin"] for r in c.result)  # erin only did 1b
    assert "| bob | " in first.summary.read_text() and "2 submission(s) changed" in first.summary.read_text()
    assert (reports / "grades.csv").is_file() and (first.workspaces["grade"] / env["GRADEBOOK"] / "students"
                                                   / "bob.html").is_file()

    second = Run(repo, tmp_path / "run2", cache, env, event="workflow_dispatch", run_id=2,
                 inputs={"student": "erin", "task": "1c", "points": "3", "reason": "1c was in her notebook"})
    assert graded(second) == (0, 0, 3)  # restored: nothing ran
    assert second.results["unapplied"] == "skipped"  # the override was applied: nothing to say

    shutil.copytree(DEMO / "dave", repo / "submissions" / "dave")
    head = git(repo, "rev-parse", "HEAD")
    commit(repo, "dave joins")
    third = Run(repo, tmp_path / "run3", cache, env, event="push", before=head, run_id=3)
    assert third.needs["decide"]["count"] == "1"
    assert graded(third) == (1, 0, 3)
    rows = {r["student_id"]: r for r in csv.DictReader(
        (third.workspaces["grade"] / env["REPORTS"] / "grades.csv").open())}
    assert set(rows) == {"bob", "carol", "dave", "erin"}
    assert rows["erin"]["task_1c"] == "3" and rows["erin"]["overridden"] == "1c"  # the second run's override
    found = review_gradebook(third.workspaces["grade"] / env["GRADEBOOK"])
    assert any({"carol", "dave"} <= set(group["students"]) for group in found["identical"])
    assert SECRET not in everything_written(first) + everything_written(second) + everything_written(third)
    assert not [p for run in (first, second, third) for ws in run.workspaces.values()
                for p in ws.rglob(".grader-secret")]
    logged = json.loads(git(repo, "show", "grader-overrides:overrides.json"))  # the log outlives the cache
    assert [(r["student"], r["task"], r["points"], r["by"]) for r in logged["overrides"]] == \
        [("erin", "1c", 3.0, "ta-on-duty")]


def test_a_run_whose_cache_was_evicted_says_so_and_puts_the_overrides_back(repo_env, tmp_path):
    """A push grades, a manual run overrides erin's 1c, then GitHub evicts the cache: the next run restores no
    gradebook, says so at the top of its summary, grades the class again and puts the override back from the
    signed log on its branch, as it was (who, when, why); its exports show it."""
    import csv

    from grader.api import open_gradebook

    repo, before, env = repo_env
    cache = Cache(tmp_path / "cache")
    Run(repo, tmp_path / "run1", cache, env, event="push", before=before, run_id=1)
    second = Run(repo, tmp_path / "run2", cache, env, event="workflow_dispatch", run_id=2,
                 inputs={"student": "erin", "task": "1c", "points": "3", "reason": "1c was in her notebook"})
    assert "kept the override log on grader-overrides" in second.step("grade", "Keep the override log").stdout
    with open_gradebook(second.workspaces["grade"] / env["GRADEBOOK"]) as (gradebook, aid, _):
        trail = gradebook.override_log(aid)
    assert [(r["student"], r["task"], r["points"]) for r in trail] == [("erin", "1c", 3.0)]

    evicted = Run(repo, tmp_path / "run3", Cache(tmp_path / "evicted"), env, event="workflow_dispatch", run_id=3)
    summary = evicted.summary.read_text()
    assert summary.startswith("> **No gradebook was restored from the Actions cache") and "graded before" in summary
    assert "::warning::No gradebook was restored" in evicted.step("grade", "Read the override log").stdout
    assert graded(evicted) == (3, 0, 0)  # from scratch
    assert "put back: erin 1c: 3 points by ta-on-duty" in evicted.step("grade", "Put back").stderr
    assert "1 override(s) put back from the log" in summary
    ws = evicted.workspaces["grade"]
    with open_gradebook(ws / env["GRADEBOOK"]) as (gradebook, aid, _):
        assert gradebook.override_log(aid) == trail  # the audit trail as it was: who, when, why, what it replaced
    rows = {r["student_id"]: r for r in csv.DictReader((ws / env["REPORTS"] / "grades.csv").open())}
    assert rows["erin"]["task_1c"] == "3" and rows["erin"]["overridden"] == "1c"
    erin = next(s for s in json.loads((ws / env["GRADEBOOK"] / "results.json").read_text())["students"]
                if s["id"] == "erin")
    assert next(t for t in erin["tasks"] if t["id"] == "1c")["override"]["reason"] == "1c was in her notebook"
    assert "up to date" in evicted.step("grade", "Keep the override log").stdout  # nothing new to keep


def test_a_gradebook_poisoned_in_the_cache_is_refused_and_the_class_graded_from_scratch(repo_env, tmp_path):
    """Any job of a run on the default branch can write its Actions cache (the check job runs students' code,
    sandboxed; a sandbox escape holds the runner's cache token, never GRADER_SECRET).  Erin saves a newer entry
    of the gradebook's key, the last run's gradebook in which she gave herself 10 points on 1c with the real
    `grader override`, by the TA.  Before, the next run restored it, exported her 10 and signed her override
    into the log on the branch; now the restored gradebook fails its seal, the top of the summary says so, and
    the class is graded from scratch: nothing of hers stands or is logged."""
    import csv

    from grader.api import override_score

    repo, before, env = repo_env
    cache = Cache(tmp_path / "cache")
    Run(repo, tmp_path / "run1", cache, env, event="push", before=before, run_id=1)
    forged = tmp_path / "forged"
    shutil.copytree(cache.root / "0", forged)
    override_score("erin", "1c", 10, reason="checked by hand", by="ta-on-duty", out_dir=forged)
    cache.save("grader-gradebook-666-1", forged)  # newer than run 1's: the one a restore-key prefix finds

    second = Run(repo, tmp_path / "run2", cache, env, event="workflow_dispatch", run_id=2)
    summary = second.summary.read_text()
    assert summary.startswith("> **The gradebook restored from the Actions cache failed verification (gradebook.sqlite"
                              " was changed, "), summary[:500]
    assert "::error::The gradebook restored" in second.step("grade", "Trust the restored").stdout
    assert "No gradebook was restored" not in summary  # one message, the right one
    assert graded(second) == (3, 0, 0)  # from scratch
    rows = {r["student_id"]: r for r in csv.DictReader(
        (second.workspaces["grade"] / env["REPORTS"] / "grades.csv").open())}
    assert rows["erin"]["task_1c"] != "10" and rows["erin"]["overridden"] == ""
    assert json.loads(git(repo, "show", "grader-overrides:overrides.json"))["overrides"] == []
    third = Run(repo, tmp_path / "run3", cache, env, event="workflow_dispatch", run_id=3)  # run 2's, sealed
    assert graded(third) == (0, 0, 3) and "failed verification" not in third.summary.read_text()


def test_runs_that_write_the_gradebook_wait_in_a_queue_rather_than_replace_each_other():
    """GitHub keeps one pending job per concurrency group: a newer one cancels the one pending and takes its
    place, so a student's push while a run grades cancelled a TA's override run waiting behind it.  With
    `queue: max` pending jobs wait their turn (up to 100), never cancelled by a newer one, nor the one in
    progress (no cancel-in-progress)."""
    group = JOBS["grade"]["concurrency"]
    assert group == {"group": "grader-gradebook", "queue": "max"}, group
    assert "concurrency" not in WORKFLOW  # the whole run is not in a group: decide and check never wait


def test_only_the_grading_job_may_write_the_actions_cache():
    """Any job of a run on the default branch could save to its cache, the check job too, which runs students'
    code: past the sandbox, that code could save a gradebook (refused by its seal) or pip's downloads, which
    the grading job installs the grader from.  The cache service enforces each job's cache-mode."""
    modes = {name: job.get("cache-mode") for name, job in JOBS.items()}
    assert modes == {"decide": "none", "check": "read", "grade": "write", "unapplied": "none"}, modes
    assert not [step for step in JOBS["check"]["steps"] if step.get("uses", "").startswith("actions/cache@")]


def test_a_ta_override_whose_grading_job_was_cancelled_is_said_and_fails_the_run(repo_env, tmp_path):
    """Beyond the queue (100 pending jobs of students' pushes) or cancelled by hand, a TA's override run never
    grades: its run says at the top of its summary that the override was not applied, and fails, so the TA
    sees it (before, the run ended 'cancelled' among the students' runs, the override silently missing)."""
    repo, _, env = repo_env
    cache = Cache(tmp_path / "cache")
    run = Run(repo, tmp_path / "run", cache, env, event="workflow_dispatch", cancelled=("grade",),
              inputs={"student": "erin", "task": "1c", "points": "3", "reason": "1c was in her notebook"})
    assert run.results["grade"] == "cancelled" and run.results["unapplied"] == "failure"
    summary = run.summary.read_text()
    assert summary.startswith("> **This run's override (erin 1c: 3) was NOT applied, or not kept: the grading job "
                              "was cancelled"), summary
    assert "run the workflow again with the same inputs" in summary.lower()
    assert cache.keys == []  # nothing graded, nothing saved


def test_a_cancelled_push_run_or_a_manual_run_without_an_override_says_nothing(repo_env, tmp_path):
    """The control: a push's grading job cancelled (a newer push's run grades the whole class) or a manual run
    that only grades has no override to lose."""
    repo, before, env = repo_env
    push = Run(repo, tmp_path / "push", Cache(tmp_path / "c1"), env, event="push", before=before,
               cancelled=("grade",))
    manual = Run(repo, tmp_path / "manual", Cache(tmp_path / "c2"), env, event="workflow_dispatch",
                 cancelled=("grade",))
    assert push.results["unapplied"] == manual.results["unapplied"] == "skipped"
    assert push.summary.read_text() == manual.summary.read_text() == ""


def test_an_override_run_on_another_branch_says_that_its_override_was_not_applied(repo, tmp_path):
    """A manual override run on a branch other than the default one is only checked: the TA is told that the
    override was not applied, and why."""
    repo, _ = repo
    git(repo, "checkout", "-qb", "extra")
    env = dict(pinned_env(repo), PYTHONPATH=str(ROOT))
    run = Run(repo, tmp_path / "run", Cache(tmp_path / "cache"), env, event="workflow_dispatch",
              inputs={"student": "erin", "task": "1c", "points": "3", "reason": "seen"}, ref="refs/heads/extra",
              cancelled=("check",))  # the check job's own tests are above; here only what the TA is told
    assert run.results["grade"] == "skipped" and run.results["unapplied"] == "failure"
    assert "was NOT applied, or not kept: the class was not graded in this run (this run is on" in \
        run.summary.read_text()


def test_without_the_secret_the_workflow_checks_on_public_data_and_says_so(repo_env, tmp_path):
    from junitparser import JUnitXml

    repo, before, env = repo_env
    run = Run(repo, tmp_path, Cache(tmp_path / "cache"), env, event="push", before=before, secret="")
    assert run.needs["decide"]["mode"] == "check" and "no GRADER_SECRET" in run.needs["decide"]["why"]
    assert "grade" not in run.steps
    check = run.step("check", "Check")
    assert "::warning::Not graded with the secret: no GRADER_SECRET" in check.stdout
    summary = run.summary.read_text()
    assert "public validation data" in summary and "| bob | " in summary and "| erin | " in summary
    reports = run.workspaces["check"] / "grader-reports"
    assert {p.name for p in reports.glob("junit-*.xml")} == {"junit-bob.xml", "junit-erin.xml"}
    suite = next(iter(JUnitXml.fromfile(str(reports / "junit-bob.xml"))))
    assert suite.name == "bob" and len(list(suite)) == 11


MARKER_CODE = """
import pathlib as _pathlib
_pathlib.Path({marker!r}).write_text("datasets.py of the push was imported")
"""


def hostile_datasets(repo: Path, marker: Path) -> None:
    """The assignment's datasets.py with a line a push added: at import, it writes ``marker`` (code that could
    as well read GRADER_SECRET from its environment and send it away)."""
    path = repo / "reference" / "tutorial6" / "datasets.py"
    path.write_text(path.read_text() + MARKER_CODE.format(marker=str(marker)))


def test_a_push_that_edits_datasets_py_is_checked_without_the_secret_and_refused(repo_env, tmp_path):
    """A push edits the assignment's datasets.py beside a submission: the grading job does not run (nothing of
    the run sees the secret), the check job refuses the folder by its pinned hash before importing it, and the
    summary says why."""
    repo, _, env = repo_env  # pinned before the push
    marker = tmp_path / "imported.txt"
    head = git(repo, "rev-parse", "HEAD")
    hostile_datasets(repo, marker)
    shutil.copy(DEMO / "alice" / "1f.h5", repo / "submissions" / "bob" / "1f.h5")
    commit(repo, "bob's 1f (and a line in datasets.py)")
    run = Run(repo, tmp_path / "run", Cache(tmp_path / "cache"), env, event="push", before=head)
    decided = run.needs["decide"]
    assert decided["mode"] == "check" and "outside submissions/" in decided["why"] \
        and "reference/tutorial6/datasets.py" in decided["why"]
    assert "grade" not in run.steps  # the job with the secret never started
    assert all(env.get("GRADER_SECRET") in (None, "") for job in run.steps.values() for _, _, env in job)
    check = run.step("check", "Check")
    assert check.returncode == 2  # the grader could not run: the folder is not the pinned one
    assert "not the pinned" in check.stderr and assignment_digest(repo / "reference" / "tutorial6") in check.stderr
    assert not marker.exists()  # refused before any import
    assert "checked without the secret" in run.summary.read_text()


def test_the_grading_job_refuses_an_assignment_that_is_not_the_pinned_one_before_importing_it(repo_env, tmp_path):
    """The assignment was changed by an earlier push (only checked); a later push changes submissions alone, so
    it is graded with the secret: `grade --assignment-sha256` refuses the folder before importing it."""
    repo, _, env = repo_env
    marker = tmp_path / "imported.txt"
    hostile_datasets(repo, marker)
    commit(repo, "a line in datasets.py")
    head = git(repo, "rev-parse", "HEAD")
    shutil.copy(DEMO / "alice" / "1f.h5", repo / "submissions" / "bob" / "1f.h5")
    commit(repo, "bob's 1f")
    run = Run(repo, tmp_path / "run", Cache(tmp_path / "cache"), env, event="push", before=head)
    assert run.needs["decide"]["mode"] == "grade"
    grade = run.step("grade", "Grade")
    assert grade.returncode == 2 and "not the pinned" in grade.stderr
    assert not marker.exists()
    assert not (run.workspaces["grade"] / env["GRADEBOOK"] / "gradebook.sqlite").exists()  # nothing was graded


def test_the_marker_of_the_hostile_datasets_py_is_written_when_it_is_imported(repo, tmp_path):
    """The control of the two tests above: pinned to its own hash, the edited folder is graded, its datasets.py
    imported, and the marker written (so its absence there means no import, not a marker that never works)."""
    repo, _ = repo
    marker = tmp_path / "imported.txt"
    hostile_datasets(repo, marker)
    folder = repo / "reference" / "tutorial6"
    subs = tmp_path / "subs"
    shutil.copytree(DEMO / "bob", subs / "bob")
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(subs), "-a", str(folder), "-o",
                           str(tmp_path / "out"), "--workers", "1", "--assignment-sha256", assignment_digest(folder)],
                          env=step_env({}, GRADER_SECRET=SECRET), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.exists()


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
    env = dict(WORKFLOW["env"], GRADER_ASSIGNMENT_SHA256="ab" * 32, GRADER_PACKAGE=package)
    proc = run_step(PINNED, tmp_path, step_env(env))
    assert proc.returncode != 0
    assert proc.stdout.startswith("::error::") and "GRADER_PACKAGE" in proc.stdout


@pytest.mark.parametrize("package", [PINNED_URL, "folder", "./grader-1.2.0-py3-none-any.whl"])
def test_a_pinned_grader_package_is_accepted(package, tmp_path):
    (tmp_path / "grader-1.2.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "grader-src" / "grader").mkdir(parents=True)
    (tmp_path / "grader-src" / "grader" / "__init__.py").write_text("")
    package = str(tmp_path / "grader-src") if package == "folder" else package
    digest = package_digest(tmp_path / package) if "://" not in package else ""
    env = dict(WORKFLOW["env"], GRADER_ASSIGNMENT_SHA256="ab" * 32, GRADER_PACKAGE=package,
               GRADER_PACKAGE_SHA256=digest)
    proc = run_step(PINNED, tmp_path, step_env(env))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("digest", [WORKFLOW["env"]["GRADER_ASSIGNMENT_SHA256"], "", "ab" * 31, "zz" * 32])
def test_an_assignment_that_is_not_pinned_is_refused(digest, tmp_path):
    env = dict(WORKFLOW["env"], GRADER_ASSIGNMENT_SHA256=digest, GRADER_PACKAGE=PINNED_URL)
    proc = run_step(PINNED, tmp_path, step_env(env))
    assert proc.returncode != 0 and "::error::Set GRADER_ASSIGNMENT_SHA256" in proc.stdout


def test_grader_workflow_fills_in_the_assignment_and_its_hash(repo, tmp_path):
    repo, _ = repo
    done = subprocess.run([sys.executable, "-m", "grader.cli", "workflow", "-a", "reference/tutorial6", "-o",
                           ".github/workflows/grade.yml"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load((repo / ".github" / "workflows" / "grade.yml").read_text())
    digest = assignment_digest(repo / "reference" / "tutorial6")
    assert written["env"]["ASSIGNMENT"] == "reference/tutorial6"
    assert written["env"]["GRADER_ASSIGNMENT_SHA256"] == digest and digest in done.stderr
    assert written["jobs"] == WORKFLOW["jobs"] and "warning" not in done.stderr
    keras = load_assignment(repo / "reference" / "tutorial6").calibrated_versions["keras"]
    assert written["env"]["GRADER_CONSTRAINTS"] == f"keras=={keras}"  # what tutorial6's calibration recorded
    (repo / "reference" / "tutorial6" / "notes.txt").write_text("not committed")
    again = subprocess.run([sys.executable, "-m", "grader.cli", "workflow", "-a", "reference/tutorial6"], cwd=repo,
                           capture_output=True, text=True, timeout=300)
    assert "git does not track 1 file(s) of it (notes.txt)" in again.stderr  # a CI checkout would not have it


READ_LOG = next(step for step in JOBS["grade"]["steps"] if step.get("id") == "log")


def read_log_step(repo: Path, tmp_path: Path, env: dict, *, run_number: int, gradebook: bool = False):
    """The grade job's step that fetches the override log, alone, in a fresh clone of ``repo``: (its
    process, the step summary it wrote)."""
    ws = tmp_path / "ws"
    ws.parent.mkdir(parents=True, exist_ok=True)
    git(tmp_path, "clone", "-q", str(repo), str(ws))
    if gradebook:  # what a cache restore leaves
        (ws / env["GRADEBOOK"]).mkdir()
        (ws / env["GRADEBOOK"] / "gradebook.sqlite").write_bytes(b"")
    summary = tmp_path / "summary.md"
    summary.write_text("")
    proc = run_step(READ_LOG, ws, step_env(env, TOKEN="t", RUN_NUMBER=str(run_number), GITHUB_STEP_SUMMARY=str(summary),
                                           GITHUB_OUTPUT=str(tmp_path / "out")))
    return proc, summary.read_text(), ws


def test_no_gradebook_and_no_override_log_after_earlier_runs_is_said(repo_env, tmp_path):
    repo, _, env = repo_env
    proc, summary, _ = read_log_step(repo, tmp_path, env, run_number=7)
    assert proc.returncode == 0, proc.stderr
    assert "no override log" in summary and "earlier overrides cannot be put back" in summary
    assert proc.stdout.startswith("::warning::No gradebook was restored")


def test_the_first_run_and_a_restored_gradebook_say_nothing_alarming(repo_env, tmp_path):
    repo, _, env = repo_env
    first, summary, _ = read_log_step(repo, tmp_path / "a", env, run_number=1)
    assert first.returncode == 0 and summary == "" and "::warning::" not in first.stdout
    restored, summary, _ = read_log_step(repo, tmp_path / "b", env, run_number=9, gradebook=True)
    assert restored.returncode == 0 and summary == "" and "restored from the Actions cache" in restored.stdout


def test_a_log_branch_that_cannot_be_read_stops_the_run(repo_env, tmp_path):
    """The origin cannot be reached (git ls-remote fails otherwise than 'no such branch'): the run stops
    rather than grade again without the overrides."""
    repo, _, env = repo_env
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", str(repo), str(ws))
    git(ws, "remote", "set-url", "origin", str(tmp_path / "gone"))
    proc = run_step(READ_LOG, ws, step_env(env, TOKEN="t", RUN_NUMBER="3", GITHUB_STEP_SUMMARY=os.devnull,
                                           GITHUB_OUTPUT=os.devnull))
    assert proc.returncode == 1 and "::error::Cannot read the branch grader-overrides" in proc.stdout


def test_a_log_branch_without_the_log_stops_the_run(repo_env, tmp_path):
    repo, _, env = repo_env
    git(repo, "branch", "grader-overrides")  # a branch someone pushed, holding anything but the log
    proc, _, _ = read_log_step(repo, tmp_path, env, run_number=3)
    assert proc.returncode == 1 and "holds no overrides.json" in proc.stdout


def test_an_override_log_forged_on_its_branch_is_refused_and_nothing_is_exported(repo_env, tmp_path):
    """A student who can push writes an override log giving erin full marks on the branch (any signature:
    theirs cannot be made without the secret): the run grades, refuses the log loudly and exports nothing."""
    from grader.api import open_gradebook
    from grader.ci.overrides import log_text

    repo, before, env = repo_env
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--orphan", "grader-overrides")
    git(repo, "rm", "-rq", "--cached", ".")
    row = {"student": "erin", "task": "1c", "action": "set", "points": 10.0, "replaced_score": 0.0,
           "replaced_status": "missing", "reason": "trust me", "by": "ta-on-duty", "at": "2026-12-01T10:00:00+00:00"}
    (repo / "overrides.json").write_text(log_text("tutorial6", [row], "a secret the student guessed wrong"))
    git(repo, "add", "overrides.json")
    git(repo, "commit", "-qm", "overrides")
    git(repo, "checkout", "-q", "-f", head)
    run = Run(repo, tmp_path / "run", Cache(tmp_path / "cache"), env, event="push", before=before, run_id=4)
    put_back = run.step("grade", "Put back")
    assert put_back.returncode == 1 and "signature does not match" in put_back.stderr
    assert "::error::The override log of the branch grader-overrides was refused" in put_back.stdout
    ws = run.workspaces["grade"]
    assert not (ws / env["REPORTS"] / "grades.csv").exists()
    with open_gradebook(ws / env["GRADEBOOK"]) as (gb, aid, _):
        assert gb.override_log(aid) == [] and all(t.get("override") is None for s in gb.results(aid)
                                                 for t in s["tasks"])
    assert "trust me" in git(repo, "show", "grader-overrides:overrides.json")  # left for a TA to look at


def test_the_batchs_warnings_reach_the_runs_page(repo_env, tmp_path):
    """The runner installed other versions than the calibration recorded (here: the calibration says Keras
    3.0.0): the batch's warning is an annotation and tops the run's summary, not only a line in the log."""
    repo, _, env = repo_env
    calibration = repo / "reference" / "tutorial6" / "calibration.toml"
    calibration.write_text(re.sub(r'(?m)^keras_version = .*$', 'keras_version = "3.0.0"', calibration.read_text()))
    commit(repo, "calibrated elsewhere")
    env = dict(env, **{k: v for k, v in pinned_env(repo).items() if k == "GRADER_ASSIGNMENT_SHA256"})
    run = Run(repo, tmp_path / "run", Cache(tmp_path / "cache"), env, event="workflow_dispatch", run_id=1)
    grade = run.step("grade", "Grade")
    assert grade.returncode == 0, grade.stderr[-3000:]
    assert "::warning::Grading with other versions than the calibration was recorded with: keras" in grade.stdout
    summary = run.summary.read_text()
    assert summary.startswith("> **Warning:** Grading with other versions than the calibration") \
        and "3.0.0" in summary and "| bob | " in summary


@pytest.mark.parametrize("job", ["check", "grade"])
@pytest.mark.parametrize("constraints", ["keras==3.15.1 jax==0.10.2", ""])
def test_the_grader_is_installed_within_the_calibrated_versions(job, constraints, tmp_path):
    """Each job's install step gives pip the calibration's versions as constraints (or, where none are filled
    in, says the versions are whatever the index serves).  pip and apt are stand-ins that record their
    arguments: the rest of the step is the template's."""
    shims = tmp_path / "bin"
    shims.mkdir()
    record = tmp_path / "pip.txt"
    (shims / "sudo").write_text("#!/bin/sh\nexit 0\n")  # apt-get: not here
    (shims / "python").write_text(f'#!/bin/sh\necho "$@" > {record}\nfor a; do last="$a"; done\n'
                                  f'while [ $# -gt 0 ]; do [ "$1" = -c ] && cat "$2" >> {record}; shift; done\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    install = next(step for step in JOBS[job]["steps"] if step.get("id") == "install")
    env = dict(WORKFLOW["env"], GRADER_CONSTRAINTS=constraints, GRADER_PACKAGE="git+https://example.org/g@" + "a" * 40)
    proc = run_step(install, tmp_path, step_env(env, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}"))
    assert proc.returncode == 0, proc.stderr
    called, *pins = record.read_text().splitlines()
    assert called.startswith("-I -m pip install -c ") and called.endswith(env["GRADER_PACKAGE"])
    assert pins == constraints.split()
    assert ("::warning::GRADER_CONSTRAINTS is empty" in proc.stdout) == (not constraints)


@pytest.mark.parametrize("job", ["check", "grade"])
def test_a_pip_folder_pushed_to_the_repository_root_is_not_what_installs_the_grader(job, tmp_path):
    """A push adds `pip/__main__.py` at the top of the repository (checked, not graded: but the check job installs
    the grader there too).  `python -m pip` puts the working directory first on sys.path, so the push's code ran
    as the runner's user, with sudo, before any sandbox.  The install step's Python must not look there."""
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "sudo").write_text("#!/bin/sh\nexit 0\n")  # apt-get: not here
    (shims / "sudo").chmod(0o755)
    marker = tmp_path / "ran.txt"
    (tmp_path / "pip").mkdir()
    (tmp_path / "pip" / "__init__.py").write_text("")
    (tmp_path / "pip" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('the push ran')\n")
    install = next(step for step in JOBS[job]["steps"] if step.get("id") == "install")
    env = dict(WORKFLOW["env"], GRADER_CONSTRAINTS="keras==3.15.1", GRADER_PACKAGE="./no-such-grader.whl")
    path = f"{shims}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    proc = run_step(install, tmp_path, step_env(env, PATH=path, PIP_NO_INDEX="1"))
    assert not marker.exists(), proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no-such-grader.whl" in proc.stdout + proc.stderr  # the real pip looked for it


OVERRIDE = next(step for step in JOBS["grade"]["steps"] if step.get("name", "").startswith("Override a score"))


def override_step(tmp_path: Path, *, actor: str, tas: str, **inputs) -> tuple[subprocess.CompletedProcess, str]:
    """The manual run's override step alone, run by ``actor`` with the repository variable GRADER_TAS = ``tas``
    (and ``inputs`` in place of erin 1c 10 "mine"); `grader` is a stand-in that records its arguments, one a
    line: (the step's process, what `grader` was called with)."""
    shims = tmp_path / "bin"
    shims.mkdir()
    record = tmp_path / "grader.txt"
    (shims / "grader").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n')
    (shims / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    run = Run.__new__(Run)
    run.values = {"inputs.student": "erin", "inputs.task": "1c", "inputs.points": "10", "inputs.reason": "mine",
                  "github.actor": actor, "github.triggering_actor": actor, "vars.GRADER_TAS": tas,
                  **{f"inputs.{k}": v for k, v in inputs.items()}}
    env = {k: run.expr(v, {}) for k, v in OVERRIDE["env"].items()}
    path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]])
    proc = run_step(OVERRIDE, tmp_path, step_env(WORKFLOW["env"], **env, PATH=path, PYTHONPATH=str(ROOT)))
    return proc, record.read_text() if record.exists() else ""


@pytest.mark.parametrize("tas", ["ta-on-duty other-ta", ""])
def test_a_manual_run_by_someone_not_a_ta_overrides_nothing(tmp_path, tas):
    """Anyone who can push can run the workflow by hand (Run workflow), a student too: one gives herself 10
    points.  Only the TAs the repository variable GRADER_TAS names (admins set it) override a score."""
    proc, called = override_step(tmp_path, actor="erin", tas=tas)
    assert proc.returncode == 1 and called == ""
    assert proc.stdout.startswith("::error::erin may not override a score") and "GRADER_TAS" in proc.stdout


def test_a_manual_run_by_a_ta_overrides_the_score(tmp_path):
    proc, called = override_step(tmp_path, actor="other-ta", tas="ta-on-duty other-ta")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert called.startswith("override\n") and called.endswith("\n--\nerin\n1c\n10\n"), called
    assert "--reason\nmine\n--by\nother-ta\n" in called


@pytest.fixture(scope="module")
def dashed_class(tmp_path_factory) -> Path:
    """A class graded by the real `grader grade` whose students named their folders like options: ``-erin``
    and ``--undo`` (each with erin's 1b)."""
    root = tmp_path_factory.mktemp("dashed")
    for who in ("-erin", "--undo"):
        (root / "submissions" / who).mkdir(parents=True)
        shutil.copy(DEMO / "erin_1b.h5", root / "submissions" / who / "1b.h5")
    grader = str(Path(sys.executable).parent / "grader")
    done = subprocess.run([grader, "grade", "submissions", "--assignment", str(TUTORIAL6), "--out", "gradebook"], cwd=root, capture_output=True, text=True, timeout=1800,
                          env=step_env({}, GRADER_SECRET=SECRET, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


@pytest.mark.parametrize("student", ["-erin", "--undo"])
def test_a_student_whose_id_begins_with_a_dash_is_overridden_by_the_real_step(dashed_class, tmp_path, student):
    """A student names her folder ``-erin`` (or ``--undo``): the TA's manual run overrides her task.  Before,
    the step put the id first on `grader override`'s command line, where it was read as an option (``No such
    option: -e``; ``--undo`` turned a score into an undo of another id); now the ids follow ``--``."""
    from grader.api import open_gradebook

    work = tmp_path / "class"
    shutil.copytree(dashed_class, work)
    run = Run.__new__(Run)
    run.values = {"inputs.student": student, "inputs.task": "1b", "inputs.points": "1.5",
                  "inputs.reason": "-f looked at it", "github.triggering_actor": "ta-on-duty",
                  "vars.GRADER_TAS": "ta-on-duty"}
    env = {k: run.expr(v, {}) for k, v in OVERRIDE["env"].items()}
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    proc = run_step(OVERRIDE, work, step_env(WORKFLOW["env"], **env, ASSIGNMENT=str(TUTORIAL6),
                                             GRADEBOOK="gradebook", PATH=path, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open_gradebook(work / "gradebook") as (gradebook, aid, _):
        trail = gradebook.override_log(aid)
    assert [(r["student"], r["task"], r["action"], r["points"], r["reason"], r["by"]) for r in trail] == \
        [(student, "1b", "set", 1.5, "-f looked at it", "ta-on-duty")]


DECIDE = next(step for step in JOBS["decide"]["steps"] if step.get("id") == "decide")


@pytest.mark.parametrize("event", ["push", "workflow_dispatch"])
def test_a_branch_other_than_the_default_one_is_only_checked(repo, tmp_path, event):
    """A student who can push pushes a branch of her own that changes only submissions/ (hers, or a classmate's
    files), or runs the workflow by hand on it: a run there would grade with the secret, save a gradebook and
    push the override log from what that branch holds.  Only the default branch is graded; the others checked."""
    repo, before = repo
    git(repo, "checkout", "-qb", "mine")
    shutil.copy(DEMO / "alice" / "1f.h5", repo / "submissions" / "erin" / "1f.h5")
    head = git(repo, "rev-parse", "HEAD")
    commit(repo, "erin's 1f, on a branch")
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", "-b", "mine", str(repo), str(ws))
    run = Run.__new__(Run)
    run.values = {"github.event_name": event, "github.event.before": head if event == "push" else "",
                  "secrets.GRADER_SECRET": SECRET, "github.ref": "refs/heads/mine",
                  "github.event.repository.default_branch": "main"}
    out = tmp_path / "out"
    out.write_text("")
    decided = {}
    for ref, default in (("refs/heads/mine", "main"), ("refs/heads/main", "main")):
        run.values.update({"github.ref": ref, "github.event.repository.default_branch": default})
        env = {k: run.expr(v, {}) for k, v in DECIDE["env"].items()}
        proc = run_step(DECIDE, ws, step_env(WORKFLOW["env"], **env, GITHUB_OUTPUT=str(out)))
        assert proc.returncode == 0, proc.stderr
        decided[ref] = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert decided["refs/heads/mine"]["mode"] == "check"
    assert "not the default branch (main)" in decided["refs/heads/mine"]["why"]
    assert decided["refs/heads/main"]["mode"] == "grade"  # the control: the same push on main is graded


CHECK = next(step for step in JOBS["check"]["steps"] if step.get("id") == "check")


@pytest.mark.parametrize("who", ["josé", "zoë o'brien"])
def test_a_student_whose_folder_name_git_quotes_is_checked(repo, tmp_path, who):
    """git quotes a path with a byte outside printable ASCII (`"submissions/jos\\303\\251/1b.h5"`) unless told
    not to: the check job read that as a student named `"submissions`, found no such folder, and checked
    nobody, silently.  `grader` is a stand-in that records whom it was asked to check."""
    repo, _ = repo
    head = git(repo, "rev-parse", "HEAD")
    (repo / "submissions" / who).mkdir()
    shutil.copy(DEMO / "erin_1b.h5", repo / "submissions" / who / "1b.h5")
    commit(repo, f"{who}'s 1b")
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", str(repo), str(ws))
    shims = tmp_path / "bin"
    shims.mkdir()
    record = tmp_path / "grader.txt"
    (shims / "grader").write_text(f'#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --name ] && echo "$2" >> {record}; '
                                  'shift; done\nexit 0\n')
    (shims / "sudo").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    proc = run_step(CHECK, ws, step_env(WORKFLOW["env"], BEFORE=head, WHY="a test",
                                        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
                                        PATH=f"{shims}{os.pathsep}{os.environ['PATH']}"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert record.exists() and record.read_text().splitlines() == [who]


PUT_BACK = next(step for step in JOBS["grade"]["steps"] if step.get("id") == "putback")


def test_an_older_signed_log_put_back_on_its_branch_is_told(tmp_path):
    """A student puts an older signed log back on the branch (the run's own, from before a TA's override): its
    signature holds.  The gradebook restored from the cache has the override the log lacks, which no run leaves
    so (each pushes its log) unless it could not push: the run logs it again, and says so on its page."""
    from grader.ci.overrides import log_text
    from grader.store import Gradebook

    rows = [{"student": who, "task": "1c", "action": "set", "points": pts, "replaced_score": 0.0,
             "replaced_status": "missing", "reason": "looked at it", "by": "ta-on-duty", "at": at}
            for who, pts, at in (("erin", 3.0, "2026-12-01T10:00:00+00:00"), ("bob", 0.0, "2026-12-02T10:00:00+00:00"))]
    (tmp_path / "grader-gradebook").mkdir()
    book = Gradebook(out_dir=tmp_path / "grader-gradebook")
    book.begin_run(load_assignment(TUTORIAL6), "local")
    book.append_overrides("tutorial6", rows)
    book.close()
    (tmp_path / "grader-override-log").mkdir()
    for name in ("overrides.json", "fetched.json"):  # as the read step leaves the branch's log
        (tmp_path / "grader-override-log" / name).write_text(log_text("tutorial6", rows[:1], SECRET))
    summary = tmp_path / "summary.md"
    summary.write_text("")
    proc = run_step(PUT_BACK, tmp_path, step_env(WORKFLOW["env"], GRADER_SECRET=SECRET, GITHUB_STEP_SUMMARY=str(summary),
                                                 PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "::warning::The override log on the branch grader-overrides lacked 1 override(s)" in proc.stdout
    assert "older log" in summary.read_text()
    assert len(json.loads((tmp_path / "grader-override-log" / "overrides.json").read_text())["overrides"]) == 2
    assert "put back: " not in proc.stderr  # the log's row was in the gradebook already


def test_a_deleted_log_branch_beside_a_restored_gradebook_is_told(tmp_path):
    """A student deletes the branch: the gradebook restored from the cache still has erin's override, and the run
    says the branch is gone rather than quietly starting a new log."""
    from grader.store import Gradebook

    row = {"student": "erin", "task": "1c", "action": "set", "points": 3.0, "replaced_score": 0.0,
           "replaced_status": "missing", "reason": "looked at it", "by": "ta-on-duty", "at": "2026-12-01T10:00:00+00:00"}
    (tmp_path / "grader-gradebook").mkdir()
    book = Gradebook(out_dir=tmp_path / "grader-gradebook")
    book.begin_run(load_assignment(TUTORIAL6), "local")
    book.append_overrides("tutorial6", [row])
    book.close()
    (tmp_path / "grader-override-log").mkdir()  # what the read step leaves when there is no branch
    summary = tmp_path / "summary.md"
    summary.write_text("")
    proc = run_step(PUT_BACK, tmp_path, step_env(WORKFLOW["env"], GRADER_SECRET=SECRET, GITHUB_STEP_SUMMARY=str(summary),
                                                 PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "::warning::There is no branch grader-overrides, but the gradebook restored from the cache has 1" \
        in proc.stdout and "the branch was deleted" in summary.read_text()


def test_a_grader_folder_pushed_to_the_root_never_sees_the_secret(repo_env, tmp_path):
    """A push adds grader/ at the top of the repository (checked without the secret: it changes files outside
    submissions/); the next push changes only submissions/, so it is graded with the secret, at the top of the
    checkout.  Nothing of the pushed grader/ runs there (nor in the check job before it)."""
    repo, _, env = repo_env
    marker = tmp_path / "ran.txt"
    (repo / "grader").mkdir()
    (repo / "grader" / "__init__.py").write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('GRADER_SECRET=' + os.environ.get('GRADER_SECRET', ''))\n")
    (repo / "grader" / "speed_probe.py").write_text("")
    shutil.copy(DEMO / "alice" / "1f.h5", repo / "submissions" / "erin" / "1f.h5")
    head = git(repo, "rev-parse", "HEAD")
    commit(repo, "erin's 1f (and a grader/ folder)")
    checked = Run(repo, tmp_path / "run1", Cache(tmp_path / "cache"), env, event="push", before=head, run_id=1)
    assert checked.needs["decide"]["mode"] == "check" and "grade" not in checked.steps
    shutil.copy(DEMO / "alice" / "1e.h5", repo / "submissions" / "erin" / "1e.h5")
    head = git(repo, "rev-parse", "HEAD")
    commit(repo, "erin's 1e")
    graded_run = Run(repo, tmp_path / "run2", Cache(tmp_path / "cache"), env, event="push", before=head, run_id=2)
    assert graded_run.needs["decide"]["mode"] == "grade"
    assert graded(graded_run)[0] == 3  # the class was graded, with the installed grader
    assert not marker.exists(), marker.read_text()


def package_digest(path: Path) -> str:
    """The SHA-256 a local GRADER_PACKAGE is pinned by: a wheel's own; a folder's, over its files' (sorted by
    path, as `sha256sum` lists them)."""
    import hashlib

    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(path).as_posix()}\n"
                    for p in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix().encode())
                    if p.is_file() and ".git" not in p.relative_to(path).parts)
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.mark.parametrize("kind", ["wheel", "folder"])
def test_a_local_grader_package_a_push_replaced_is_refused(kind, tmp_path):
    """GRADER_PACKAGE is a wheel (or folder) in the repository.  A push replaces it (checked, not graded: it
    changes files outside submissions/); every later push that changes only submissions/ was graded by the
    push's grader, with the secret.  A local package is pinned by its SHA-256, as the assignment is."""
    if kind == "wheel":
        package = tmp_path / "grader-1.2.0-py3-none-any.whl"
        package.write_bytes(b"the course's wheel")
    else:
        package = tmp_path / "grader-src"
        (package / "grader").mkdir(parents=True)
        (package / "pyproject.toml").write_text("[project]\nname = 'grader'\n")
        (package / "grader" / "__init__.py").write_text("")
    pinned = package_digest(package)
    env = dict(WORKFLOW["env"], GRADER_ASSIGNMENT_SHA256="ab" * 32, GRADER_PACKAGE=f"./{package.name}",
               GRADER_PACKAGE_SHA256=pinned)
    assert run_step(PINNED, tmp_path, step_env(env)).returncode == 0  # the course's own
    if kind == "wheel":
        package.write_bytes(b"a student's wheel")
    else:
        (package / "grader" / "__init__.py").write_text("import os  # sends GRADER_SECRET away\n")
    proc = run_step(PINNED, tmp_path, step_env(env))
    assert proc.returncode == 1 and proc.stdout.startswith("::error::GRADER_PACKAGE")
    assert f"its SHA-256 is {package_digest(package)}" in proc.stdout and "GRADER_PACKAGE_SHA256" in proc.stdout
    unpinned = run_step(PINNED, tmp_path, step_env(dict(env, GRADER_PACKAGE_SHA256="")))
    assert unpinned.returncode == 1 and "GRADER_PACKAGE_SHA256" in unpinned.stdout
