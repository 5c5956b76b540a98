"""docs/readme_check.py: parsing documents, running sessions, comparing, updating."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import readme_check as rc  # noqa: E402


def doc(text: str) -> rc.Document:
    return rc.parse(textwrap.dedent(text), "test.rst")


def run(text: str) -> tuple[rc.Document, list[rc.Session]]:
    document = doc(text)
    found = rc.sessions(document)
    rc.run_sessions(found)
    return document, found


# -- parsing ---------------------------------------------------------------------


def test_shell_session_commands_and_outputs() -> None:
    document = doc("""\
        Intro::

            $ echo one
            one
            $ cat > f.txt <<'EOF'
            $ not a command
            EOF
            $ printf 'a\\
            b\\n'
            ab
            $ talon-classic emulator --port 8321 &
            banner

        After.
        """)
    (block,) = document.blocks
    assert block.kind == "shell" and block.lineno == 3 and block.indent == 4
    steps = block.steps
    assert [s.run for s in steps] == [
        "echo one", "cat > f.txt <<'EOF'\n$ not a command\nEOF", "printf 'a\\\nb\\n'",
        "talon-classic emulator --port 8321"]
    assert [s.expected for s in steps] == [["one"], [], ["ab"], ["banner"]]
    assert [s.lineno for s in steps] == [3, 5, 8, 11]
    assert [s.background for s in steps] == [False, False, False, True]


def test_blocks_inside_a_list_item_and_expanded_form() -> None:
    document = doc("""\
        * a bullet whose block follows::

            $ echo x
            x

        * another one:

          ::

            $ echo y
            y
        """)
    assert [b.steps[0].run for b in document.blocks] == ["echo x", "echo y"]


def test_an_unmarked_illustrative_block_is_an_error() -> None:
    with pytest.raises(rc.DocumentError, match=r"test.rst:3: .*'\.\. check: skip'"):
        doc("""\
            Install::

                pip install talon-classic
            """)


def test_markers() -> None:
    document = doc("""\
        .. check: skip

        Synopsis::

            talon-classic emulator [--db FILE]

        .. check: session=s file=conf/settings.json

        ::

            {"customAttributes": []}

        .. check: session=s any-numbers

        Run::

            $ echo 12
            13
        """)
    kinds = [(b.kind, b.session, b.file, sorted(b.options)) for b in document.blocks]
    assert kinds == [("skip", None, None, ["skip"]),
                     ("file", "s", "conf/settings.json", []),
                     ("shell", "s", None, ["any-numbers"])]
    assert [s.name for s in rc.sessions(document)] == ["s"]


@pytest.mark.parametrize("text, message", [
    (".. check: sometimes\n\nX::\n\n    $ true\n", "unknown check marker word 'sometimes'"),
    (".. check: skip\n\nNo block here.\n", "without a block after it"),
    (".. check: skip\n\n.. check: skip\n\nX::\n\n    $ true\n", "without a block before"),
    ("X::\n\n    output first\n    $ true\n", "starts with a '\\$ ' command"),
    ("X::\n\n    $ cat <<EOF\n    never ends\n", "here-document 'EOF' never ends"),
    ("X::\n\n    {}\n    -> {}\n    -> {}\n", "must follow exactly one event line"),
])
def test_document_errors(text: str, message: str) -> None:
    with pytest.raises(rc.DocumentError, match=message):
        rc.parse(text, "t.rst")


def test_python_block_and_its_prints_block() -> None:
    document = doc("""\
        .. check: session=lib

        .. code-block:: python

            print("hi")

        prints::

            hi
        """)
    python, output = document.blocks
    assert (python.kind, output.kind, output.session) == ("python", "output", "lib")
    (step,) = python.steps
    assert step.run == 'print("hi")\n' and step.expected == ["hi"]
    assert [b.kind for s in rc.sessions(document) for b in s.blocks] == ["python"]


def test_case_blocks() -> None:
    document = doc("""\
        Cases::

            # a comment
            {"userId": "u1"}
            -> {"integrationId":"u1","attributes":{},"dropped":[]}

            {"type": "track"}
            -> {"skipped":"not_identify"}
        """)
    (block,) = document.blocks
    assert block.kind == "cases"
    assert [(s.run, s.expected, s.lineno) for s in block.steps] == [
        ('{"userId": "u1"}', ['{"integrationId":"u1","attributes":{},"dropped":[]}'], 4),
        ('{"type": "track"}', ['{"skipped":"not_identify"}'], 7)]


# -- comparing -------------------------------------------------------------------


def test_normaliser_masks_only_what_varies() -> None:
    norm = rc.normaliser({8321})
    assert norm("at http://127.0.0.1:37157 and 127.0.0.1:8321") == (
        "at http://127.0.0.1:<port> and 127.0.0.1:8321")
    assert norm("elapsed                   0.02s  (148 events/s)") == norm(
        "elapsed                  12.50s  (26,794 events/s)")
    assert norm("1 passed in 0.88s") == norm("1 passed in 2.10s")
    assert norm("2026-12-01 05:53:12,345 talon: x") == norm("2026-12-01 06:00:00,001 talon: x")
    assert norm("at 2026-11-01T09:00:00.123Z") != norm("at 2026-11-01T09:00:00Z")
    for differ in [("events read 12", "events read 13"), ("took 5s", "took 6s"),
                   ("2026-11-01T09:00:00Z", "2026-11-02T09:00:00Z"), ("a\tb", "a b")]:
        assert norm(differ[0]) != norm(differ[1]), differ
    numbers = rc.normaliser((), any_numbers=True)
    assert numbers("events read               7,900") == numbers("events read              10,700")


def test_merged_keeps_shown_lines_that_still_match() -> None:
    norm = rc.normaliser(())
    shown = ["events read 3", "elapsed 0.02s  (148 events/s)", "old message"]
    actual = ["events read 3", "elapsed 0.05s  (60 events/s)", "new message", "one more"]
    assert rc.merged(shown, actual, norm) == [
        "events read 3", "elapsed 0.02s  (148 events/s)", "new message", "one more"]


# -- running and updating --------------------------------------------------------

SESSION = """\
    Title
    =====

    .. check: session=s

    Files and statuses::

        $ cat > greeting.txt <<'EOF'
        hello
        EOF
        $ cat greeting.txt; ls samples
        hello
        identifies.jsonl
        make_samples.py
        settings.json
        $ false
        $ echo "status $?"
        status 0
        $ printf 'elapsed 0.01s\\n'
        elapsed 9.99s

    .. check: session=s

    .. code-block:: python

        print(open("greeting.txt").read().strip().upper())

    prints::

        HELLO
    """


def test_a_session_runs_in_order_and_shows_the_differences() -> None:
    document, (session,) = run(SESSION)
    assert session.error is None and session.skipped is None
    (failure,) = session.failures()
    assert failure.label == '$ echo "status $?"'
    assert failure.actual == ["status 1"]
    assert "test.rst:17: $ echo \"status $?\"" in session.report()
    assert "+status 1" in session.report()


def test_update_rewrites_only_what_changed(tmp_path: Path) -> None:
    document, found = run(SESSION)
    text = rc.rewrite(document, found)
    assert text == textwrap.dedent(SESSION).replace("status 0", "status 1")
    again = rc.parse(text, "test.rst")
    rerun = rc.sessions(again)
    rc.run_sessions(rerun)
    assert [s.failures() for s in rerun] == [[]]


def test_update_of_mapping_cases() -> None:
    document, found = run("""\
        .. check: session=c file=settings.json

        ::

            {"customAttributes": ["plan"]}

        .. check: session=c

        ::

            # kept as it is
            {"userId": " u1 ", "traits": {"plan": "pro", "x": 1}}
            -> {}
        """)
    assert "".join(rc.rewrite(document, found)).splitlines()[-3:] == [
        "    # kept as it is",
        '    {"userId": " u1 ", "traits": {"plan": "pro", "x": 1}}',
        '    -> {"integrationId":"u1","attributes":{"plan":"pro"},'
        '"dropped":[{"name":"x","reason":"not_allowlisted"}]}']


def test_background_server_on_a_mapped_port() -> None:
    """``--port 8321`` runs on a free port, is waited for, shown as 8321, and stopped."""
    document, (session,) = run("""\
        .. check: session=e

        ::

            $ talon-classic emulator --port 8321 --api-key demo-key-1234 &
            Talon.One emulator on http://127.0.0.1:8321 (API key ****1234, management key ****-key; inspect http://127.0.0.1:8321/_emulator/stats); Ctrl-C stops it
            $ curl -s http://127.0.0.1:8321/_emulator/stats
            {"requests": {}, "profiles": 0, "profile_updates": 0, "audiences": 0, "audience_actions": 0}
        """)
    assert session.error is None and session.failures() == [], session.report()
    banner = session.steps[0]
    assert banner.background and banner.actual == banner.expected


def test_a_missing_curl_skips_the_session_with_the_reason() -> None:
    document = doc("""\
        ::

            $ curl -s http://127.0.0.1:8321/health
            {}
        """)
    env = rc.environment()
    env["PATH"] = str(Path(sys.executable).parent)  # the venv's bin: talon-classic, no curl
    (session,) = rc.run_sessions(rc.sessions(document), env=env)
    assert session.skipped == "curl is not installed (the example uses it)"


def test_main_exit_statuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.rst"
    good.write_text("X::\n\n    $ echo hi\n    hi\n")
    bad = tmp_path / "bad.rst"
    bad.write_text("X::\n\n    $ echo hi\n    ho\n")
    broken = tmp_path / "broken.rst"
    broken.write_text("X::\n\n    just text\n")
    assert rc.main([str(good)]) == 0
    assert rc.main([str(bad)]) == 1
    assert "+hi" in capsys.readouterr().out
    assert rc.main([str(broken)]) == 2
    assert rc.main([str(bad), "--update"]) == 0
    assert bad.read_text() == "X::\n\n    $ echo hi\n    hi\n"
