"""CLI commands that read run directories: report, list, sync."""

from __future__ import annotations

import click

from hpctune.cli.options import user_errors


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="Trials in the top table.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Folder for the report (default RUN_DIR/report).")
@user_errors
def report(run_dir: str, top_k: int, output: str | None) -> None:
    """Write plots and one self-contained HTML page about a run (finished or still running)."""
    from hpctune.report.html import summary_text, write_report

    written = write_report(run_dir, top_k=top_k, output=output)
    view = written.view
    click.echo(f"hpctune: run {view.spec.name} is {view.state}; trials: {summary_text(view)}")
    ranked = view.ranked()
    if ranked:
        best = ranked[0]
        epochs = f"{best.epochs} epoch" + ("s" if best.epochs != 1 else "")
        click.echo(f"best trial {best.trial_id}: {view.spec.metric} = {best.metric:.5f} after {epochs}")
    click.echo(f"report: {written.html}  ({len(written.plots)} plots beside it)")


@click.command(name="list")
@click.argument("storage", type=click.Path(), default="runs/hpctune")
@user_errors
def list_command(storage: str) -> None:
    """List the runs under a storage folder (default runs/hpctune): state, trials, best metric, when."""
    from pathlib import Path

    from hpctune.report.html import list_runs

    rows = list_runs(storage)
    if not rows:
        click.echo(f"no hpctune runs in {Path(storage).expanduser().resolve()}")
        return
    table = [("NAME", "STATE", "TRIALS", "BEST", "METRIC", "CREATED", "LAST RESULT")]
    for row in rows:
        if row["state"] == "corrupt":
            table.append((row["name"], "corrupt", "-", "-", "-", "-", "-"))
            continue
        trials = f"{row['done']}/{row['total']} done" + (f", {row['running']} running" if row["running"] else "")
        best = "-" if row["best"] is None else f"{row['best']:.5f}"
        table.append((row["name"], row["state"], trials, best, row["metric"], row["created"].replace("T", " "),
                      row["updated"]))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
    for row in rows:
        if row["state"] == "corrupt":
            click.echo(f"{row['name']}: {row['note']}", err=True)


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--timeout", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="Seconds to allow the upload in all.")
@user_errors
def sync(run_dir: str, timeout: float) -> None:
    """Upload a run's offline W&B runs (from a node with internet access); deletes nothing."""
    from hpctune.engine.tracking import sync as sync_runs

    uploaded = sync_runs(run_dir, timeout_s=timeout, echo=click.echo)
    if uploaded:
        click.echo(f"hpctune: uploaded {len(uploaded)} W&B run(s); the local copies stay in place")

COMMANDS = [report, list_command, sync]
