"""The ``grader`` command line."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from . import __version__
from .errors import FatalError

console = Console(stderr=True, soft_wrap=True)  # never break paths in CI logs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grader")
def main():
    """Grade Keras neural-network assignments."""


@main.command()
@click.argument("submissions", type=click.Path(path_type=Path))
@click.option("--assignment", "-a", "assignment_dir", required=True, type=click.Path(path_type=Path),
              help="The assignment folder (reference/<assignment>/) holding assignment.toml.")
@click.option("--out", "-o", "out_dir", default=Path("reports"), show_default=True, type=click.Path(path_type=Path),
              help="Output folder for results.json and the HTML reports.")
def grade(submissions: Path, assignment_dir: Path, out_dir: Path):
    """Grade every submission in SUBMISSIONS.

    A submission is a folder SUBMISSIONS/<student-id>/ or files named
    <student-id>... directly in SUBMISSIONS.  Exits 0 when the batch finished,
    whatever the grades; non-zero only when the grader itself could not run.
    """
    from .pipeline import grade_batch

    try:
        summary = grade_batch(submissions, assignment_dir, out_dir, console=console)
    except FatalError as e:
        console.print(f"[bold red]error:[/] {e.explain()}")
        sys.exit(2)
    console.print(f"Graded {summary.students} student(s): reports in [bold]{summary.out_dir}[/] "
                  f"(index.html, results.json).")


@main.command()
@click.argument("assignment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--runs", "-n", default=10, show_default=True, type=click.IntRange(2, 1000),
              help="Reference runs per task.")
@click.option("--seed", "base_seed", default=1000, show_default=True, type=int,
              help="The first seed; runs use seed, seed+1, ...")
@click.option("--task", "tasks", multiple=True, help="Calibrate only these tasks (keeps the others' entries).")
def calibrate(assignment_dir: Path, runs: int, base_seed: int, tasks):
    """Train every task's reference RUNS times and write thresholds to calibration.toml."""
    from .calibrate import calibrate as run

    def progress(task_id, seed, metrics):
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        console.print(f"  task {task_id} seed {seed}: {shown}")

    try:
        out = run(assignment_dir, runs=runs, base_seed=base_seed, tasks=list(tasks) or None, progress=progress)
    except FatalError as e:
        console.print(f"[bold red]error:[/] {e.explain()}")
        sys.exit(2)
    console.print(f"Thresholds written to [bold]{out}[/]")


if __name__ == "__main__":
    main()
