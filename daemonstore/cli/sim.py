"""``daemonstore sim run|diff|fuzz``: scenario files on the model or the kernel, and the two
compared (thin click commands over :mod:`daemonstore.sim.files`, :mod:`daemonstore.sim.fuzz` and
:mod:`daemonstore.ops.scenario`; registered in ``cli/__init__.py``).

Exit codes: 0 ran, 1 a finding (a difference, a divergence, a library failure), 2 bad input or
an environment that cannot run the command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from daemonstore.command import CannotRun
from daemonstore.sim import files as sim
from daemonstore.sim import fuzz


def _load(path: str) -> sim.Loaded:
    try:
        return sim.load(path)
    except sim.ScenarioFileError as exc:
        raise CannotRun(str(exc)) from None


def _need_kernel(hint: str = "") -> None:
    reason = sim.kernel_unavailable()
    if reason:
        raise CannotRun(reason + hint)


@click.group("sim")
def sim_group() -> None:
    """Run scenarios on the model or the kernel, and compare the two."""


@sim_group.command("run")
@click.option("--kernel", is_flag=True, help="Run on the real kernel (root; private namespace).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("scenario")
def sim_run(kernel: bool, as_json: bool, scenario: str) -> None:
    """Run SCENARIO on the model (default) or the kernel and print the resulting mounts."""
    loaded = _load(scenario)
    if kernel:
        _need_kernel("; run as root, or drop --kernel to use the model")
    try:
        result = sim.run(loaded.ops, kernel=kernel)
    except OSError as exc:  # the sandbox itself could not be set up
        raise click.ClickException(f"{scenario}: sandbox failed: {exc}") from None
    except NotImplementedError as exc:  # docs/architecture.md §2: the model never guesses
        raise click.ClickException(f"{scenario}: not implemented by the model: {exc}") from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(sim.format_result(result, loaded))


@sim_group.command("diff")
@click.argument("scenarios", nargs=-1, required=True)
def sim_diff(scenarios: tuple[str, ...]) -> None:
    """Run each SCENARIO on the model and the kernel; exit 1 if any canonical form differs."""
    loaded = [_load(s) for s in scenarios]
    _need_kernel()
    differ = 0
    for item in loaded:
        diffs = sim.diff(item.ops)
        if diffs:
            differ += 1
            click.echo(f"{item.path}: differs")
            for line in diffs:
                click.echo(f"  {line}")
        else:
            click.echo(f"{item.path}: same")
    if len(loaded) > 1:
        click.echo(f"diff: {len(loaded)} scenarios, {differ} differ")
    if differ:
        sys.exit(1)


@sim_group.command("fuzz")
@click.option("--seed", type=int, required=True, help="Seed; same seed, same scenarios.")
@click.option("--count", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--ops-min", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--ops-max", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write each shrunk divergence to DIR as a scenario file.")
@click.option("--no-shrink", is_flag=True, help="Report divergences as generated.")
def sim_fuzz(seed: int, count: int, ops_min: int, ops_max: int, out: str | None,
             no_shrink: bool) -> None:
    """Random scenarios on model and kernel; shrink and print every divergence."""
    if ops_min > ops_max:
        raise CannotRun(f"--ops-min {ops_min} is larger than --ops-max {ops_max}")
    _need_kernel()
    out_dir = Path(out) if out else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CannotRun(f"--out {out}: {exc.strerror}") from None
    report = fuzz.FuzzReport()
    runs = fuzz.fuzz(seed, count, sim.run_on_model, sim.run_on_kernel, ops_min=ops_min,
                     ops_max=ops_max, do_shrink=not no_shrink)
    try:
        for running, div in runs:
            report = running
            if div is None:
                continue
            click.echo(div.report())
            if out_dir:
                path = out_dir / f"fuzz-seed{seed}-{div.index:04d}.txt"
                path.write_text(div.file_text(), encoding="utf-8")
                click.echo(f"  written to {path}")
    except fuzz.BackendBroken as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.summary())
    if report.divergences:
        sys.exit(1)
