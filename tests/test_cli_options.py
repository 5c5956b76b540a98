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


def test_check_inputs_defaults_to_stdin_unless_an_input_is_required(tmp_path) -> None:
    import pytest

    from talon_classic.cli.options import UsageFailure, check_inputs

    assert check_inputs(()) == ["-"]
    with pytest.raises(UsageFailure, match="^give a list$"):
        check_inputs((), required="give a list")
    with pytest.raises(UsageFailure, match="can be given only once"):
        check_inputs(("-", "-"))
    with pytest.raises(UsageFailure, match=r"is a directory; give a list or '-'$"):
        check_inputs((str(tmp_path),), expected="a list or '-'")
    with pytest.raises(UsageFailure, match=r"is a directory; give a \.jsonl file, a \.gz of one, "
                       r"or '-'$"):
        check_inputs((str(tmp_path),))
    with pytest.raises(UsageFailure, match="no such file"):
        check_inputs((str(tmp_path / "missing"),), required="give a list")
