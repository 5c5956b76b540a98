"""Options shared by several commands (talon_classic.cli.options)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from talon_classic.cli.options import ledger_options


def test_ledger_options_declare_the_three_options_with_the_commands_own_no_state_help() -> None:
    @click.command()
    @ledger_options(no_state_help="Keep nothing.")
    def command(no_state: bool, skip_unchanged: bool, read_timeout: float) -> None:
        click.echo(f"{no_state} {skip_unchanged} {read_timeout}")

    runner = CliRunner()
    assert runner.invoke(command, []).output == "False False 30.0\n"
    result = runner.invoke(command, ["--no-state", "--skip-unchanged", "--read-timeout", "2.5"])
    assert result.output == "True True 2.5\n"
    assert runner.invoke(command, ["--read-timeout", "0.05"]).exit_code == 2
    names = [p.name for p in command.params]
    assert names == ["no_state", "skip_unchanged", "read_timeout"]  # --help order
    assert "Keep nothing." in runner.invoke(command, ["--help"]).output


def test_identify_and_serve_share_them() -> None:
    from talon_classic.cli.identify import identify
    from talon_classic.cli.serve import serve

    def shared(command: click.Command) -> list[tuple]:
        return [(p.name, p.default, p.help, str(p.type)) for p in command.params
                if p.name in ("skip_unchanged", "read_timeout")]

    assert shared(identify) == shared(serve) and len(shared(identify)) == 2
