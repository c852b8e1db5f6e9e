"""The ``grader`` command line."""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from . import __version__
from .errors import FatalError
from .textsafe import terminal

console = Console(stderr=True, soft_wrap=True)  # never break paths in CI logs


def _fatal(e: FatalError) -> NoReturn:
    """A command that cannot go on: its reason, in plain words, and exit status 2."""
    console.print(f"[bold red]error:[/] {terminal(e.explain())}")
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grader")
def main():
    """Grade Keras neural-network assignments."""


class _BatchBar:
    """``grader grade``'s terminal: the batch's warnings as they come, and a progress bar whose symbols say
    what they count (✓ passed, ✗ below half the points, ! could not be graded)."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]grading[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[green]✓ {task.fields[passed]} passed[/] [red]✗ {task.fields[failed]} below half[/] "
                       "[yellow]! {task.fields[error]} could not be graded[/]"), TimeRemainingColumn(),
            TextColumn("{task.fields[current]}"), console=console, transient=False)
        self._bar = None

    def secret_created(self, origin: str) -> None:
        console.print(f"[yellow]Created a grading secret in {terminal(origin)}.[/] Held-out data is drawn from it; "
                      "keep this file (or set GRADER_SECRET) so that re-grading gives the same scores.")

    def warning(self, text: str, *, severe: bool = False) -> None:
        console.print(f"[bold red]WARNING: {terminal(text)}[/]" if severe
                      else f"[bold yellow]warning:[/] {terminal(text)}")

    def note(self, text: str) -> None:
        console.print(f"[dim]{terminal(text)}[/]", highlight=False)

    def started(self, total: int) -> None:
        self._progress.start()
        self._bar = self._progress.add_task("grading", total=total, current="", passed=0, failed=0, error=0)

    def status(self, text: str) -> None:
        if self._bar is None:  # before the bar: a line of its own
            if text:
                console.print(f"{terminal(text[:1].upper() + text[1:])}...")
        else:
            self._progress.update(self._bar, current=terminal(text))

    def student_done(self, student_id: str, counts: dict) -> None:
        self._progress.update(self._bar, advance=1, passed=counts["passed"], failed=counts["failed"],
                              error=counts["error"])

    def finished(self) -> None:
        self._progress.stop()


def _warn_if_weak_secret(out_dir: Path | None, secret: str | None = None) -> None:
    """Say loudly when the grading secret (``secret``, else the one ``grade`` would use) is short or guessable:
    every seed a student can print is derived from it, and a secret found by guessing gives away the held-out
    data."""
    from .evaluate.heldout import SECRET_ENV, resolve_secret, secret_weakness

    origin = f"the {SECRET_ENV} environment variable"
    if not secret:
        if out_dir is None:
            return  # nothing set: a new random secret is made
        try:
            found = resolve_secret(out_dir, create=False)
        except FatalError:
            return  # grading says why it cannot read it
        if found is None:
            return  # the grader makes a random one
        secret, origin = found.value, found.origin
    why = secret_weakness(secret)
    if why:
        console.print(f"[bold red]WARNING: the grading secret from {terminal(origin)} is easy to guess: "
                      f"{terminal(why)}.[/] Students can print seeds derived from it and try guesses offline; a "
                      "secret found gives away the held-out data. Use a random one (`python -c \"import secrets; "
                      f"print(secrets.token_hex(32))\"`), or unset {SECRET_ENV} and let the grader make one.",
                      highlight=False)


#: pins the assignment folder by its hash (CI: a folder students could push to is refused before anything of it runs)
_SHA256_OPTION = click.option(
    "--assignment-sha256", metavar="HASH", default=None, envvar="GRADER_ASSIGNMENT_SHA256",
    help="Refuse the assignment folder unless its SHA-256 is HASH (what `grader workflow -a FOLDER` prints), "
         "before any of its code is imported.")


@main.command()
@click.argument("submissions", type=click.Path(path_type=Path))
@click.option("--assignment", "-a", "assignment_dir", required=True, type=click.Path(path_type=Path),
              help="The assignment folder (reference/<assignment>/) holding assignment.toml.")
@click.option("--out", "-o", "out_dir", default=None, type=click.Path(path_type=Path),
              help="Output folder for results.json, the HTML reports, the gradebook and the secret  "
                   "[default: reports/<assignment id>]")
@click.option("--workers", "-j", type=click.IntRange(1, 256), default=None,
              help="Students graded in parallel, each in its own worker process  [default: the machine's cores]")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Grade on a Dask distributed cluster (tcp://host:8786) instead of local workers.")
@click.option("--force", is_flag=True, help="Grade every submission again, even those the gradebook has.")
@click.option("--db", "db_url", metavar="URL", default=None, envvar="GRADER_DB",
              help="Gradebook database URL (SQLAlchemy), e.g. postgresql://user@host/grades  "
                   "[default: sqlite in the output folder]")
@click.option("--wait", type=click.FloatRange(0), default=0.0, metavar="SECONDS",
              help="If another grader is writing to the output folder, wait this long for it.")
@click.option("--allow-unsandboxed", is_flag=True,
              help="Run notebooks even where they cannot be isolated (no bubblewrap, or neither root nor user "
                   "namespaces): student code then runs with your permissions.")
@_SHA256_OPTION
def grade(submissions: Path, assignment_dir: Path, out_dir: Path, workers, scheduler, force, db_url, wait,
          allow_unsandboxed, assignment_sha256):
    """Grade every submission in SUBMISSIONS.

    A submission is a folder SUBMISSIONS/<student-id>/ or files named
    <student-id>... directly in SUBMISSIONS.  Results go to a gradebook as
    each student is finished: a batch that is stopped and started again goes
    on where it stopped, and an unchanged submission is not graded twice.
    Exits 0 when the batch finished, whatever the grades; 2 when the grader
    itself could not run.
    """
    from . import speed_probe

    speed_probe.start()  # beside the imports below: a batch of notebooks takes it when it sets the time limits
    from .api import default_out_dir, grade_batch

    try:
        out_dir = out_dir or default_out_dir(assignment_dir)
        _warn_if_weak_secret(out_dir)
        summary = grade_batch(submissions, assignment_dir, out_dir, _BatchBar(), workers=workers,
                              scheduler=scheduler, force=force, db_url=db_url, wait=wait,
                              allow_unsandboxed=allow_unsandboxed, assignment_sha256=assignment_sha256 or None)
    except FatalError as e:
        _fatal(e)
    except KeyboardInterrupt:
        console.print("[yellow]Stopped.[/] Every student finished so far is in the gradebook; run the same "
                      "command again to go on.")
        sys.exit(130)
    c = summary.counts
    console.print(f"Graded {summary.students} student(s) in {summary.seconds:.1f} s "
                  f"({c.get('measured', 0)} run, {c.get('rescored', 0)} re-scored, {c.get('cached', 0)} unchanged): "
                  f"reports in [bold]{summary.out_dir}[/] (index.html, results.json), gradebook {summary.gradebook}.")


@main.command()
@click.option("--assignment", "-a", "assignment_dir", required=True, type=click.Path(path_type=Path),
              help="The assignment folder (reference/<assignment>/).")
@click.option("--out", "-o", "out_dir", default=None, type=click.Path(path_type=Path),
              help="The output folder of an earlier `grader grade`  [default: reports/<assignment id>]")
@click.option("--db", "db_url", metavar="URL", default=None, envvar="GRADER_DB", help="Gradebook database URL.")
def report(assignment_dir: Path, out_dir: Path, db_url):
    """Re-render the HTML reports and results.json from the gradebook, without grading anything."""
    from .api import default_out_dir, render_reports

    try:
        summary = render_reports(assignment_dir, out_dir or default_out_dir(assignment_dir), db_url=db_url)
    except FatalError as e:
        _fatal(e)
    c = summary.counts
    console.print(f"Rendered {summary.students} student page(s) and the class summary into "
                  f"[bold]{summary.out_dir}[/] in {summary.seconds:.1f} s ({c.get('plots_drawn', 0)} plot(s) drawn, "
                  f"{c.get('plots_reused', 0)} kept from before).")


_GRADEBOOK_OPTIONS = [
    click.option("--out", "-o", "out_dir", default=Path("reports"), show_default=True,
                 type=click.Path(path_type=Path),
                 help="The output folder of an earlier `grader grade`, or the folder above it (reports/ holds "
                      "reports/<assignment>/)."),
    click.option("--db", "db_url", metavar="URL", default=None, envvar="GRADER_DB", help="Gradebook database URL."),
    click.option("--assignment-id", default=None, help="Which assignment  [default: the only one]"),
]


def _gradebook_options(command):
    """The options that find an existing gradebook, as `grader export` takes them."""
    for option in reversed(_GRADEBOOK_OPTIONS):
        command = option(command)
    return command


@main.command()
@_gradebook_options
@click.option("--to", "to_dir", type=click.Path(path_type=Path), default=None,
              help="Where to write  [default: the gradebook's folder/export]")
@click.option("--format", "formats", multiple=True, type=click.Choice(["csv", "gradescope", "junit", "markdown"]),
              help="Which exports (repeatable)  [default: all]")
def export(out_dir: Path, db_url, assignment_id, to_dir, formats):
    """Write grades.csv, Gradescope results.json files, junit.xml and summary.md from the gradebook."""
    from .api import export_gradebook

    try:
        written = export_gradebook(out_dir, db_url=db_url, assignment_id=assignment_id, to_dir=to_dir,
                                   formats=formats)
    except FatalError as e:
        _fatal(e)
    for path in written:
        if path.name != "results.json":
            console.print(f"wrote {terminal(str(path))}")
    folders = Counter(p.parent.parent for p in written if p.name == "results.json")
    for folder, n in folders.items():
        console.print(f"wrote {n} Gradescope results.json file(s) under {terminal(str(folder))}")


@main.command()
@click.argument("student")
@click.argument("task")
@click.argument("points", type=float, required=False)
@click.option("--reason", default=None, help="Why (kept and shown with the score; optional with --undo).")
@click.option("--undo", is_flag=True, help="Undo the override in force: the grader's own score stands again.")
@click.option("--by", default=None, help="Who decided  [default: the OS user]")
@click.option("--assignment", "-a", "assignment_dir", default=None, type=click.Path(path_type=Path),
              help="The assignment folder, to re-draw the pages  [default: the one the class was graded from]")
@_gradebook_options
def override(student, task, points, reason, undo, by, assignment_dir, out_dir, db_url, assignment_id):
    """Set STUDENT's score for TASK to POINTS after a manual review, or --undo it.

    The gradebook keeps who, when, why and the grader's own score it
    replaced; every report and export shows the override, marked as such. It
    outlives re-grades; one whose automatic score changes is flagged for
    review (`grader review`); overriding again clears the flag. The reason is
    optional with --undo (the gradebook records the undo either way).
    """
    from .api import override_score

    if undo == (points is not None):
        console.print("[bold red]error:[/] give POINTS, or --undo without POINTS.")
        sys.exit(2)
    from .ci.inputs import override_problems  # the one check, as the manual CI run's

    for problem in (refused := override_problems(student, task, reason, by)):
        console.print(f"[bold red]error:[/] nothing was overridden: {problem}.", highlight=False)
    if refused:
        sys.exit(2)
    if not undo and not (reason or "").strip():
        console.print("[bold red]error:[/] an override needs a reason (--reason TEXT): the gradebook keeps it.")
        sys.exit(2)
    try:
        done = override_score(student, task, None if undo else points, reason=reason, by=by, out_dir=out_dir,
                              db_url=db_url, assignment_id=assignment_id, assignment_dir=assignment_dir)
    except FatalError as e:
        _fatal(e)
    t = done["task"]
    what = (f"undid the override of {terminal(student)}'s task {terminal(task)}: the grader's {t['score']:g} of "
            f"{t['max_score']:g} ({t['status']}) stands" if undo else
            f"{terminal(student)}'s task {terminal(task)}: {t['score']:g} of {t['max_score']:g} (the grader's own: "
            f"{t['override']['automatic']['score']:g}, {t['override']['automatic']['status']})")
    console.print(f"{what}; recorded in the gradebook.")
    if done["redrawn"] is not None:
        console.print(f"Re-drew results.json, index.html and the student's page in {terminal(str(done['redrawn']))}.")
    else:
        console.print(f"[yellow]The pages were not re-drawn[/] ({terminal(done['why_not'])}): run `grader report -a "
                      "<assignment folder>`.")
    if done["exported"]:
        console.print(f"Wrote the exports in {terminal(str(done['exported']))} again (exports written "
                      "elsewhere with `grader export --to` need that command again).")


@main.command("override-log")
@click.argument("log", type=click.Path(path_type=Path))
@_gradebook_options
def override_log(log, out_dir, db_url, assignment_id):
    """Keep the overrides in LOG, a file signed with the grading secret, and put back those it has.

    The gradebook and LOG are brought level: overrides LOG has and the gradebook lacks (a gradebook graded
    again from scratch) are put back as they were (who, when, why); LOG is written again with every override
    and undo of the gradebook. A LOG not signed with this GRADER_SECRET, or one that disagrees with the
    gradebook, is refused and nothing changes (exit 2).
    """
    from .ci.overrides import sync_override_log

    try:
        done = sync_override_log(log, out_dir, db_url=db_url, assignment_id=assignment_id)
    except FatalError as e:
        _fatal(e)
    for row in done.put_back:
        what = "undid the override" if row["action"] == "undo" else f"{row['points']:g} points"
        console.print(f"put back: {terminal(row['student'])} {terminal(row['task'])}: {what} by "
                      f"{terminal(row['by'])} at {row['at']} ({terminal(row['reason'])})", highlight=False)
    console.print(f"{len(done.put_back)} override(s) put back from the log, {done.logged} added to it; "
                  f"{terminal(str(log))} holds {done.total}.", highlight=False)


@main.command()
@_gradebook_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--near", type=click.FloatRange(0, 1), default=None,
              help="How close to a threshold is worth a look, as a fraction of it  [default: 0.02]")
def review(out_dir, db_url, assignment_id, as_json, near):
    """List what needs a human, most urgent first: internal errors, tasks that could not be graded, overrides
    whose automatic score changed, refused training, scores within a hair of a threshold, identical work, and
    inferred tasks whose runner-up was nearly as likely."""
    from rich.table import Table

    from .api import review_gradebook
    from .textsafe import json_text

    try:
        found = review_gradebook(out_dir, db_url=db_url, assignment_id=assignment_id, near=near)
    except FatalError as e:
        _fatal(e)
    if as_json:
        click.echo(json_text(found, indent=2))  # no raw control or bidi character reaches the terminal
        return
    out = Console(soft_wrap=False)
    if not found["items"]:
        out.print(f"{terminal(found['assignment'])}: nothing needs review.")
    else:
        table = Table(title=f"{terminal(found['assignment'])}: {len(found['items'])} thing(s) to review")
        table.add_column("#", justify="right")
        table.add_column("what", no_wrap=True)
        table.add_column("student", overflow="fold")
        table.add_column("task", no_wrap=True)
        table.add_column("details", overflow="fold")
        for item in found["items"]:
            table.add_row(str(item["rank"]), item["kind"], terminal(", ".join(item["students"])),
                          terminal(item["task"] or ""),
                          terminal(item["detail"]))
        out.print(table)
    if found["not_fingerprinted"]:
        out.print(f"{len(found['not_fingerprinted'])} student(s) were graded before identical work was looked for; "
                  "`grader grade` looks at them.")


@main.command()
@_gradebook_options
@click.option("--assignment", "-a", "assignment_dir", default=None, type=click.Path(path_type=Path),
              help="The assignment folder, to re-draw the pages after an override  [default: the one the class "
                   "was graded from]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (anything but localhost exposes the grades to the network; the "
                   "token still guards every page).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="The port (0: any free one).")
@click.option("--by", default=None, metavar="NAME",
              help="Who the override forms name (editable on the page; kept in the audit trail)  [default: the "
                   "OS user, as `grader override`]")
def serve(out_dir, db_url, assignment_id, assignment_dir, host, port, by):
    """Review the class in a browser: the class table, the review queue, each student's work, and overrides
    (the same audit trail as `grader override`).  Open the URL it prints (it holds the access token)."""
    try:
        from .serve.app import LOOPBACK, TOKEN_PARAM, create_app, serve as run
    except ImportError as e:
        console.print(f"[bold red]error:[/] grader serve needs Flask ({terminal(str(e))}): "
                      "pip install 'grader[serve]'.")
        sys.exit(2)
    try:
        app = create_app(out_dir, db_url=db_url, assignment_id=assignment_id, assignment_dir=assignment_dir,
                         host=host, by=by)
    except FatalError as e:
        _fatal(e)
    if host.strip("[]").lower() not in LOOPBACK:
        console.print(f"[bold yellow]warning:[/] listening on {terminal(host)}, not this machine only: whoever "
                      "reaches it can ask for the pages (the token guards them), over plain HTTP that the network "
                      "can read, token and grades included.")

    def ready(server):
        shown = f"[{server.host}]" if ":" in server.host else server.host
        click.echo(f"Serving {app.extensions['grader']['assignment']} at "
                   f"http://{shown}:{server.port}/?{TOKEN_PARAM}={app.config['GRADER_TOKEN']}", err=False)
        console.print("Open that URL in a browser (it holds the access token); Ctrl-C stops.")

    try:
        run(app, host, port, ready=ready)
    except OSError as e:
        import errno

        busy = " (another `grader serve`? each needs its own port; --port 0 takes any free one)" if \
            e.errno == errno.EADDRINUSE else ""
        console.print(f"[bold red]error:[/] cannot listen on {terminal(host)}:{port}: {e.strerror or e}{busy}")
        sys.exit(2)
    except KeyboardInterrupt:
        pass


CHECK_MARK = {"passed": "[green]✓[/]", "partial": "[yellow]~[/]", "failed": "[red]✗[/]", "missing": "[red]✗[/]",
              "error": "[bold red]![/]"}
CHECK_STATUS = {"passed": "[green]passed[/]", "partial": "[yellow]partial[/]", "failed": "[red]failed[/]",
                "missing": "[red]missing[/]", "error": "[bold red]error[/]"}


def _check_events():
    """What ``check`` says as it goes (``check.CheckEvents``): format advice before anything runs, then each
    cell as it finishes."""
    from .check import CheckEvents

    class Shown(CheckEvents):
        def unsandboxed(self, reason):
            console.print(f"[bold red]WARNING: {terminal(reason)}[/]\n[red]Your notebook runs as you, on this "
                          "machine, like running it in Jupyter.[/]")

        def versions(self, words):
            console.print(f"[bold yellow]WARNING:[/] {terminal(words)}", highlight=False)

        def advice(self, line):
            console.print(f"[yellow]![/] {terminal(line)}", highlight=False)

        def limits(self, words):
            console.print(terminal(words), highlight=False)

        def note(self, words):
            console.print(f"[dim]{terminal(words)}[/]", highlight=False)

        def running(self, file):
            console.print(f"[bold]Running {terminal(file)}, cell by cell:[/]", highlight=False)

        def ran(self, run):
            mark = {"ok": "[green]ok[/]", "skipped": "[dim]skipped[/]"}.get(run.status, f"[red]{run.status}[/]")
            first = terminal(next((ln for ln in run.source.splitlines() if ln.strip()), "")[:60])
            extra = terminal(f" {run.error_name}: {run.error_value[:100]}") if run.error_name else ""
            console.print(f"  cell {run.index + 1:>3} {mark} {run.seconds:5.1f} s  [dim]{first}[/]{extra}")

    return Shown()


def _print_check(outcome) -> None:
    """One block per task: verdict, points, where it was found, the metric against its threshold, and
    (unless passed) what to fix.  Lines, not a table: readable in a narrow terminal and in CI logs."""
    from .assess import fmt_value

    result = outcome.result
    console.rule(f"{terminal(outcome.title)}: check of {terminal(result.id)} on public validation data")
    for t in result.tasks:
        measured = ""
        if t.threshold and t.threshold.get("metric") in t.metrics:
            m = t.threshold["metric"]
            rel = "≥" if t.threshold.get("higher_is_better") else "≤"
            measured = f"  {m} {fmt_value(m, t.metrics[m])} (pass {rel} {fmt_value(m, t.threshold['pass'])})"
            if f"retrained_{m}" in t.metrics:  # the page's verdict: the recipe, re-trained, earned what the run did not
                measured = (f"  — your run: {m} {fmt_value(m, t.metrics[m])}; your recipe re-trained reached "
                            f"{fmt_value(m, t.metrics[f'retrained_{m}'])} (pass {rel} "
                            f"{fmt_value(m, t.threshold['pass'])})")
        where = f"  from {terminal(t.source)}" if t.source else ""
        optional = " (optional)" if t.optional else ""
        console.print(f"{CHECK_MARK.get(t.status, '?')} task {t.id}{optional}: {CHECK_STATUS.get(t.status, t.status)} "
                      f"{t.score:g}/{t.max_score:g}{where}{measured}", highlight=False)
        if t.status != "passed":
            console.print(f"    {terminal(t.message)}", style="dim" if t.status == "missing" else None,
                          highlight=False)
    for nb in result.notebooks:
        for f in nb.get("failures", []):
            console.print(f"[red]✗[/] {terminal(nb['name'])}, cell {f['cell']} "
                          f"({terminal(f['error'] or f['status'])}): {terminal(f['explanation'])}", highlight=False)
    for note in result.notes:
        console.print(f"[dim]note:[/] {terminal(note)}", highlight=False)
    console.print(f"Estimated score on public data: [bold]{result.score:g} / {result.max_score:g}[/]")
    if outcome.not_run:
        console.print(f"[bold red]No verdict:[/] {terminal(outcome.not_run)}", highlight=False)
    elif outcome.problems:
        missing = [t.id for t in result.tasks if not t.optional and t.status == "missing"]
        broken = [t.id for t in result.tasks if not t.optional and t.status == "error"]
        parts = ([f"task(s) {', '.join(missing)} missing"] if missing else []) + \
                ([f"task(s) {', '.join(broken)} could not be graded"] if broken else [])
        console.print(f"[bold red]Not ready to submit:[/] {'; '.join(parts)} (see above for what to do).")
    else:
        console.print("[bold green]Every required task is present and loads.[/]")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--assignment", "-a", "assignment_dir", type=click.Path(path_type=Path), default=None,
              help="The assignment folder or student kit  [default: $GRADER_ASSIGNMENT, a kit beside your work, "
                   "the only one under ./grader-kit or ./reference]")
@click.option("--out", "-o", "out_dir", default=Path("grader-check"), show_default=True,
              type=click.Path(path_type=Path), help="Where to write the HTML feedback page.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), default=None,
              help="Also write the verdicts as JUnit XML (for CI test reports).")
@click.option("--summary", "summary_path", type=click.Path(path_type=Path), default=None,
              help="Also append a Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--name", default=None, help="The name to show for the submission  [default: its file or folder name]")
@_SHA256_OPTION
def check(path: Path, assignment_dir, out_dir: Path, junit_path, summary_path, name, assignment_sha256):
    """Check your own submission (a notebook, a script, a saved model or a folder) before you submit it.

    Runs the grader's checks on public validation data (not the data you are
    graded on) and says per task what was found, how it does and what to fix.
    Exits 0 when every required task is present and loads, 1 when not, 2 when
    the check itself could not run.
    """
    from . import speed_probe

    speed_probe.start()  # beside the imports below: a notebook's time limits take it
    from .api import find_assignment
    from .check import check as run
    from .logs import batch_log

    try:
        assignment_dir = assignment_dir or find_assignment(path)
        if assignment_sha256:
            from .spec import verify_digest

            verify_digest(assignment_dir, assignment_sha256)
        # the libraries' own warnings (Keras, TensorFlow, in this process and the workers) go to a log beside the
        # page, not to the student's terminal
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        out_dir.mkdir(parents=True, exist_ok=True)
        with batch_log(out_dir / "check.log"):
            outcome = run(path, assignment_dir, out_dir=out_dir, name=name, events=_check_events())
        _print_check(outcome)
        if outcome.page is not None:
            console.print(f"HTML feedback: [bold]{terminal(outcome.page)}[/]")
        if junit_path or summary_path:
            from .export import junit_xml, markdown_summary
            from .report import atomic_write

            data = outcome.result.to_json()
            if junit_path:
                atomic_write(junit_path, junit_xml(f"check-{outcome.assignment_id}", [data]))
            if summary_path:
                text = markdown_summary(f"Check of {data['id']} (public validation data)", [], [data],
                                        note="Checked on public validation data, not graded: no grading secret "
                                             "was available. Scores are an estimate.")
                with open(summary_path, "a", encoding="utf-8") as f:
                    f.write(text)
    except OSError as e:
        console.print(f"[bold red]error:[/] cannot write {terminal(str(e.filename))}: {e.strerror}")
        sys.exit(2)
    except FatalError as e:
        _fatal(e)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("assignment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--runs", "-n", default=30, show_default=True, type=click.IntRange(2, 1000),
              help="Reference runs per task.")
@click.option("--seed", "base_seed", default=1000, show_default=True, type=int,
              help="The first seed; runs use seed, seed+1, ...")
@click.option("--task", "tasks", multiple=True,
              help="Calibrate only these tasks' thresholds (keeps the others' entries; records no timings).")
@click.option("--timings-only", is_flag=True,
              help="Only time the reference notebook (solution.ipynb) for the notebooks' time limits; the "
                   "thresholds stay as they are.")
@click.option("--no-timings", is_flag=True, help="Only the thresholds; the recorded timings stay as they are.")
@click.option("--timing-runs", default=3, show_default=True, type=click.IntRange(1, 100),
              help="Runs of the reference notebook per backend (medians).")
@click.option("--workers", "-w", type=click.IntRange(1, 64), default=None,
              help="Processes training the references at once  [default: one per core]")
@click.option("--timing-backend", "timing_backends", multiple=True, type=click.Choice(["jax", "tensorflow"]),
              help="Time the reference notebook on this backend (repeatable)  [default: the spec's notebook "
                   "backend; a re-run on another backend gets the spec's fixed limits]")
@click.option("--allow-unsandboxed", is_flag=True,
              help="Time the reference notebook even where the sandbox does not start (without isolation).")
@click.option("--keras", type=click.Choice(["3", "2"]), default="3", show_default=True,
              help="2: the Keras 2 path (tf_keras): train the references there with the seeds of the Keras 3 "
                   "calibration and record in calibration.toml ([keras2]) whether its thresholds hold, and "
                   "thresholds of its own where they do not.")
def calibrate(assignment_dir: Path, runs: int, base_seed: int, tasks, timings_only: bool, no_timings: bool,
              timing_runs: int, timing_backends, workers, allow_unsandboxed, keras):
    """Train every task's reference RUNS times and write thresholds to calibration.toml; time the reference
    notebook (when the assignment has one) for the notebooks' time limits."""
    from .calibrate import REFERENCE_NOTEBOOK, calibrate as run, calibrate_timings

    if timings_only and (no_timings or tasks):
        console.print("[bold red]error:[/] --timings-only goes with neither --no-timings nor --task.")
        sys.exit(2)

    from .session import Events

    class Shown(Events):  # each reference run, timing run and warning, as it comes
        def reference_run(self, task_id, seed, metrics):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            console.print(f"  task {task_id} seed {seed}: {shown}")

        def timing_run(self, backend, i, n, result):
            slowest = max(result.cells, key=lambda c: c.seconds)
            console.print(f"  {REFERENCE_NOTEBOOK} on {backend}, run {i}/{n}: {result.seconds:.1f} s "
                          f"(slowest cell {slowest.index + 1}: {slowest.seconds:.1f} s)")

        def warning(self, text, *, severe=False):
            console.print(f"[bold yellow]warning:[/] {terminal(text)}")

    shown = Shown()

    try:
        if keras == "2":
            from .calibrate_keras2 import calibrate_keras2

            given = click.get_current_context().get_parameter_source("runs") != click.core.ParameterSource.DEFAULT
            out = calibrate_keras2(assignment_dir, runs=runs if given else None, events=shown)
            console.print(f"The Keras 2 path's calibration written to [bold]{out}[/]")
            return
        if not timings_only:
            out = run(assignment_dir, runs=runs, base_seed=base_seed, tasks=list(tasks) or None, events=shown,
                      workers=workers)
            console.print(f"Thresholds written to [bold]{out}[/]")
        if timings_only or not (no_timings or tasks):
            out, table = calibrate_timings(assignment_dir, runs=timing_runs, events=shown,
                                           backends=list(timing_backends) or None,
                                           allow_unsandboxed=allow_unsandboxed)
            if table is None:
                console.print(f"No {REFERENCE_NOTEBOOK} in {assignment_dir}: no timings recorded; the notebooks' "
                              "time limits are the spec's fixed cell_timeout_s and notebook_timeout_s.")
            else:
                shown = "; ".join(f"{b}: notebook {t['notebook_s']:.1f} s, slowest cell {t['slowest_cell']} "
                                  f"{t['slowest_cell_s']:.1f} s" for b, t in table.items() if isinstance(t, dict))
                console.print(f"Timings written to [bold]{out}[/] ({shown}; speed probe {table['probe_s'] * 1000:.0f}"
                              " ms)")
    except FatalError as e:
        _fatal(e)


@main.command()
@click.argument("assignment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "-o", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where to write the kit  [default: grader-kit/<assignment id>]")
@click.option("--grader", "grader_source", metavar="WHEEL|URL", default=None,
              help="The grader students install: a grader-*.whl file, or git+https://.../grader@<40-hex commit>  "
                   "[default: this grader's own wheel, built into the kit]")
def kit(assignment_dir: Path, out_dir, grader_source):
    """Build the student kit of an assignment: the spec, its public thresholds and data generators, no
    reference solution, the grader's own wheel and a README.txt whose commands install it and run
    `grader check`."""
    from .api import KIT_FOLDER, build_kit
    from .kit import WHEEL
    from .spec import load_assignment

    try:
        out = build_kit(assignment_dir, out_dir or KIT_FOLDER / load_assignment(assignment_dir).id,
                        grader=grader_source or WHEEL)
    except FatalError as e:
        _fatal(e)
    console.print(f"wrote the kit to [bold]{terminal(str(out))}[/]: hand out this folder; its README.txt tells "
                  "students how to install this grader and run `grader check`.")


@main.command()
@click.option("--assignment", "-a", "assignment_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The assignment folder, as a path in the submissions repository (run this at its top): "
                   "sets ASSIGNMENT and pins its SHA-256.")
@click.option("--out", "-o", "out_path", type=click.Path(path_type=Path), default=None,
              help="Write it here (e.g. .github/workflows/grade.yml)  [default: print it]")
def workflow(assignment_dir, out_path):
    """The GitHub Actions workflow that grades a submissions repository on every push.

    With -a, the assignment folder and its SHA-256 are filled in: a run refuses any other folder (pin it
    again after each change of the folder, by running this again)."""
    from .ci import untracked, workflow_text

    try:
        text, digest = workflow_text(assignment_dir)
    except FatalError as e:
        _fatal(e)
    if out_path is None:
        click.echo(text, nl=False)
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text, encoding="utf-8")
    if digest is not None:
        console.print(f"{terminal(str(assignment_dir))}: SHA-256 {digest} (GRADER_ASSIGNMENT_SHA256)")
        stray = untracked(assignment_dir)
        if stray:
            console.print(f"[bold yellow]warning:[/] git does not track {len(stray)} file(s) of it "
                          f"({terminal(', '.join(stray[:5]))}): a CI checkout lacks them and its hash differs. "
                          "Commit or remove them, then run this again.")
    if out_path is not None:
        console.print(f"wrote {terminal(str(out_path))}: set GRADER_PACKAGE"
                      + ("" if digest else ", ASSIGNMENT and GRADER_ASSIGNMENT_SHA256 (-a fills them in)")
                      + " at its top, and add the repository secret GRADER_SECRET to a repository only staff "
                      "can push to (see its header).")


@main.group()
def gradescope():
    """Gradescope's autograder: build the bundle a course uploads, or run it (inside Gradescope)."""


@gradescope.command("build")
@click.argument("assignment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "-o", "out_zip", type=click.Path(path_type=Path), default=Path("autograder.zip"),
              show_default=True, help="The zip to upload as the autograder configuration.")
@click.option("--budget", "budget_s", type=click.FloatRange(60), default=540.0, show_default=True,
              help="Seconds the grader may spend per submission (keep it under Gradescope's timeout).")
def gradescope_build(assignment_dir: Path, out_zip: Path, budget_s: float):
    """Write the autograder zip: setup.sh, run_autograder, the assignment (no solution) and a new secret."""
    from .gradescope import LOCK_FILE, RECOMMENDED_MEMORY_GB, build_bundle, bundle_summary
    from .versions import GRADING_PACKAGES

    secret = os.environ.get("GRADER_SECRET")
    if secret:  # otherwise the bundle gets a new random one
        _warn_if_weak_secret(None, secret)
    try:
        out = build_bundle(assignment_dir, out_zip, secret=secret, budget_s=budget_s)
    except FatalError as e:
        _fatal(e)
    made = bundle_summary(out)
    pins = ", ".join(f"{name} {version}" for name, version in made["pins"])
    calibrated = made["calibrated"] or {}
    if not calibrated:
        source = "the assignment records no calibration versions (its thresholds are not calibrated here)"
    elif set(GRADING_PACKAGES) | {"python"} <= set(calibrated):
        source = "the versions its calibration recorded"
    else:
        source = ("its calibration recorded only " + ", ".join(f"{n} {v}" for n, v in sorted(calibrated.items()))
                  + f": run `grader calibrate {assignment_dir}` to record them all")
    console.print(f"wrote {terminal(str(out))}: upload it as the autograder, made for Gradescope's "
                  f"{made['image']} base image (20.04 and 24.04 work too): setup.sh runs the grader on Python "
                  f"{made['python']} (the image's python3 if it is {made['python']}, else one uv {made['uv']} "
                  f"provides) with {len(made['pins'])} packages pinned to this environment's versions ({source}; "
                  f"{LOCK_FILE} in the zip): {terminal(pins)}. Give the container at least "
                  f"{RECOMMENDED_MEMORY_GB} GB of memory and a timeout above {budget_s:.0f} s. It holds "
                  + ("the grading secret from GRADER_SECRET." if secret else "a new grading secret: keep the zip "
                     "private (staff only)."), highlight=False)


@gradescope.command("run")
@click.option("--root", type=click.Path(path_type=Path), default=Path("/autograder"), show_default=True,
              help="Gradescope's autograder folder (source/, submission/, results/).")
def gradescope_run(root: Path):
    """Grade root/submission into root/results/results.json (what run_autograder does)."""
    from .gradescope import run_autograder

    try:
        path = run_autograder(root)
    except FatalError as e:
        _fatal(e)
    console.print(f"wrote {terminal(str(path))}")


if __name__ == "__main__":
    main()
