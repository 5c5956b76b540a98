"""Run the examples in README.rst and docs/*.rst and compare them with what they show.

The README is a user's first test of the project: every example in it must
run as written on a fresh clone. This checker runs them, compares their real
output with the output the document shows, and with ``--update`` rewrites
the shown output from real runs (so a change of message is one command and
a reviewed diff away)::

    python docs/readme_check.py                  # check README.rst and docs/*.rst
    python docs/readme_check.py --update         # rewrite the shown output from real runs
    python docs/readme_check.py README.rst --session serve -v

No library does this for reStructuredText shell sessions with background
servers and an update mode: pytest-examples reads Markdown and Python only,
Sybil has no update mode and no lexer for ``::`` blocks, prysk/cram need
their own two-space format and ``(re)`` annotations in the text, and cog
regenerates text verbatim, so a changing elapsed time would never match.

What is run
-----------

Every literal block (a paragraph ending in ``::``) and every
``.. code-block::`` is one of these, and anything else is an error, so no
example can silently escape the check:

* a **shell session**: lines starting with ``$ `` are commands, the lines
  after one (up to the next ``$ ``) are its expected output, stdout and
  stderr together as a terminal shows them. A command continues on the next
  line after a trailing ``\\`` and over a here-document (``<<'EOF'`` ...
  ``EOF``). A command ending in ``&`` is started in the background: the
  checker waits until the port of its ``--port N`` answers HTTP (or for its
  output to settle), compares the output printed by then, and stops it
  (SIGINT, as Ctrl-C) when the session ends. Each command runs in its own
  ``bash``; ``$?`` is the previous command's exit status; files are the only
  other state that carries over.
* a **Python example**: ``.. code-block:: python``, run with this Python;
  its expected output is the literal block right after it when that block's
  paragraph is ``prints::`` (otherwise it must print nothing).
* **mapping cases**: a block of event lines, each followed by one
  ``-> `` line with what ``talon-classic transform --settings settings.json``
  prints for it, without the ``line`` and ``input`` keys (``settings.json``
  comes from an earlier block of the session). ``#`` lines are comments.
* a **file** (``.. check: file=NAME``): the block is written to NAME.

Markers
-------

An RST comment ``.. check: WORD ...`` before a block (before the paragraph
that introduces it) says how to treat it:

``skip``
    illustrative only (an option synopsis, an install command); not run.
``session=NAME``
    blocks with the same NAME share one directory and their background
    processes, in document order. A block without one is a session alone.
``file=NAME``
    the block is the content of file NAME.
``any-numbers``
    numbers in this block's output may differ (a run interrupted after a
    fixed time). Use it sparingly.

Every session runs in a fresh temporary directory holding a copy of the
repository's ``samples/``, with this Python's ``bin`` (so the checkout's
``talon-classic``) first on ``PATH``, ``TALON_*`` variables removed,
``COLUMNS=80`` and unbuffered Python output. Fixed ports in commands
(``--port 8321``, ``127.0.0.1:8321``) are replaced by free ports and mapped
back in the output, so the check runs beside anything else on the machine.
Only loopback is used.

What may differ
---------------

Output is compared line by line, exactly, after trailing spaces are removed
and tabs expanded, except for what genuinely varies between runs: ports
picked at random (``127.0.0.1:<port>`` other than the fixed ones), elapsed
times with decimals (``0.02s``), rates (``148 events/s``) and timestamps with
fractions of a second. ``--update`` keeps every shown line that still
matches under those rules, so its diff shows only real changes.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
COMMAND_TIMEOUT = 60.0
READY_TIMEOUT = 20.0
CASES_COMMAND = "talon-classic transform --settings settings.json"

MARKER = re.compile(r"^(\s*)\.\. check:(.*)$")
CODE_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S*)\s*$")
BULLET = re.compile(r"^(\s*)(?:[-*+]|\d+\.|#\.)\s+")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
HOST_PORT = re.compile(r"\b(127\.0\.0\.1|localhost):(\d{1,5})\b")
PORT_OPTION = re.compile(r"(--port[= ])(\d{1,5})\b")
# leading spaces too: right-aligned figures move when they grow a digit
DURATION = re.compile(r" *\b\d+\.\d+s\b")
#: A state database in the state directory: its directory and the hash of the
#: deployment URL (whose port is random here) vary from run to run.
STATE_FILE = re.compile(r"\S*/talon-classic/[\w.-]+-[0-9a-f]{12}\.db")
RATE = re.compile(r" *\b\d[\d,]*(?:\.\d+)? (events|profiles|requests|actions)/s\b")
TIMESTAMP = re.compile(
    r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[.,]\d+(?:Z|[+-]\d\d:?\d\d)?")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
TRANSFORM_HEAD = re.compile(r'^\{"line":\d+,"input":"(?:[^"\\]|\\.)*",?')
PYTHON_LANGUAGES = frozenset({"python", "python3", "py"})
OPTIONS = frozenset({"skip", "any-numbers"})


class DocumentError(Exception):
    """The document breaks the conventions above (an unmarked block, a bad marker)."""


# -- parsing -----------------------------------------------------------------


@dataclass
class Step:
    """One thing run and compared: a shell command, a Python block or a mapping case.

    ``head`` are the document lines that say what is run (kept as they are
    on update); ``expected`` the output shown after them, each shown with
    ``prefix`` (``"-> "`` for mapping cases); ``actual`` what the run gave.
    """

    lineno: int
    head: list[str]
    expected: list[str]
    run: str = ""
    background: bool = False
    prefix: str = ""
    actual: list[str] | None = None
    trailing_blank: int = 0

    @property
    def label(self) -> str:
        """The first line of what is run, for messages."""
        first = self.head[0] if self.head else self.run.splitlines()[0] if self.run else ""
        return first if len(first) <= 100 else first[:97] + "..."


@dataclass
class Block:
    """A literal block or code-block, where it is, and what the checker makes of it."""

    path: str
    kind: str  # shell, python, output, cases, file, skip
    start: int  # index of the first content line in the document's lines
    end: int  # index after the last content line
    indent: int
    lines: list[str]
    intro: str = ""
    language: str = ""
    session: str | None = None
    options: frozenset[str] = frozenset()
    file: str | None = None
    items: list[str | Step] = field(default_factory=list)
    output: Block | None = None  # a Python block's ``prints::`` block

    @property
    def lineno(self) -> int:
        """1-based line of the block's first content line."""
        return self.start + 1

    @property
    def steps(self) -> list[Step]:
        """What is run, in order (a Python block's step lives in its output block)."""
        source = self.output if self.kind == "python" and self.output else self
        return [i for i in source.items if isinstance(i, Step)]


@dataclass
class Document:
    """A parsed reStructuredText file: its lines and its blocks."""

    path: str
    lines: list[str]
    blocks: list[Block]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _text_indent(line: str) -> int:
    """Where a paragraph line's text starts (after a list bullet)."""
    m = BULLET.match(line)
    return len(m.group(0)) if m else _indent(line)


def _take_indented(lines: list[str], i: int, deeper_than: int) -> tuple[int, int]:
    """The content block starting at or after ``i``: (start, end), blank edges excluded."""
    n = len(lines)
    while i < n and not lines[i].strip():
        i += 1
    start = i
    end = i
    while i < n and (not lines[i].strip() or _indent(lines[i]) > deeper_than):
        if lines[i].strip():
            end = i + 1
        i += 1
    return start, end


def _parse_marker(text: str, where: str) -> dict[str, str]:
    words: dict[str, str] = {}
    for word in text.split():
        name, _, value = word.partition("=")
        if name in ("session", "file") and value:
            words[name] = value
        elif name in OPTIONS and not value:
            words[name] = ""
        else:
            raise DocumentError(f"{where}: unknown check marker word {word!r} "
                                "(skip, session=NAME, file=NAME, any-numbers)")
    if not words:
        raise DocumentError(f"{where}: empty check marker")
    return words


def parse(text: str, path: str = "<text>") -> Document:
    """Find every block of a document, classify it and split it into steps."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: dict[str, str] | None = None
    pending_at = ""
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        marker = MARKER.match(line)
        if marker:
            if pending is not None:
                raise DocumentError(f"{pending_at}: check marker without a block before "
                                    f"the next marker")
            pending_at = f"{path}:{i + 1}"
            pending = _parse_marker(marker.group(2), pending_at)
            i += 1
            continue
        code = CODE_DIRECTIVE.match(line)
        literal = stripped.endswith("::") and not stripped.startswith("..")
        if not (code or literal):
            i += 1
            continue
        if code:
            depth = _indent(line)
            j = i + 1
            while j < n and lines[j].strip().startswith(":") and _indent(lines[j]) > depth:
                j += 1  # directive options
            intro, language = "", code.group(2).lower()
        else:
            depth = _text_indent(line)
            j = i + 1
            k = i
            while k > 0 and lines[k - 1].strip() and not MARKER.match(lines[k - 1]):
                k -= 1
            intro = " ".join(x.strip() for x in lines[k:i + 1])
            language = ""
        start, end = _take_indented(lines, j, depth)
        if start == end:
            i = j
            continue
        content = lines[start:end]
        base = min(_indent(x) for x in content if x.strip())
        block = Block(path, "", start, end, base, [x[base:].rstrip() for x in content],
                      intro=intro, language=language)
        options = pending or {}
        where = f"{path}:{start + 1}"
        pending = None
        block.session = options.get("session")
        block.file = options.get("file")
        block.options = frozenset(k for k in options if k in OPTIONS)
        _classify(block, blocks[-1] if blocks else None, where)
        blocks.append(block)
        i = end
    if pending is not None:
        raise DocumentError(f"{pending_at}: check marker without a block after it")
    return Document(path, lines, blocks)


def _classify(block: Block, previous: Block | None, where: str) -> None:
    lines = block.lines
    if "skip" in block.options:
        block.kind = "skip"
    elif block.file is not None:
        block.kind = "file"
    elif block.language in PYTHON_LANGUAGES:
        block.kind = "python"
        block.items = [Step(block.lineno, [], [], run="\n".join(lines) + "\n")]
    elif (previous is not None and previous.kind == "python" and previous.output is None
          and block.intro.lower().rstrip(":").strip() == "prints"):
        block.kind = "output"
        step = previous.items[0]
        assert isinstance(step, Step)
        step.expected = list(lines)
        block.items = [step]
        previous.items = []
        previous.output = block
        if block.session is None:
            block.session = previous.session
    elif any(x.startswith("$ ") for x in lines):
        block.kind = "shell"
        block.items = _shell_steps(block, where)
    elif any(x.startswith("-> ") for x in lines):
        block.kind = "cases"
        block.items = _case_steps(block, where)
    else:
        raise DocumentError(
            f"{where}: this block is neither a shell session ($ lines), a Python example, "
            "mapping cases (-> lines) nor a file; put '.. check: skip' before its paragraph "
            "if it is illustrative only")


def _shell_steps(block: Block, where: str) -> list[str | Step]:
    lines = block.lines
    if not lines[0].startswith("$ "):
        raise DocumentError(f"{where}: a shell session starts with a '$ ' command")
    items: list[str | Step] = []
    i = 0
    while i < len(lines):
        first = i
        head = [lines[i]]
        command = [lines[i][2:]]
        i += 1
        while command[-1].endswith("\\") and i < len(lines):
            head.append(lines[i])
            command.append(lines[i])
            i += 1
        for match in HEREDOC.finditer("\n".join(command)):
            word, strip_tabs = match.group(2), "<<-" in match.group(0)
            while i < len(lines):
                head.append(lines[i])
                command.append(lines[i])
                i += 1
                if (lines[i - 1].lstrip("\t") if strip_tabs else lines[i - 1]) == word:
                    break
            else:
                raise DocumentError(f"{where}: here-document {word!r} never ends")
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        run = "\n".join(command)
        background = run.rstrip().endswith("&") and not run.rstrip().endswith("&&")
        if background:
            run = run.rstrip()[:-1].rstrip()
        trailing = len(expected) - len(_trim(expected))
        items.append(Step(block.lineno + first, head, _trim(expected), run=run,
                          background=background, trailing_blank=trailing))
    return items


def _case_steps(block: Block, where: str) -> list[str | Step]:
    items: list[str | Step] = []
    current: Step | None = None
    for offset, line in enumerate(block.lines):
        if line.startswith("-> "):
            if current is None or current.expected:
                raise DocumentError(f"{block.path}:{block.lineno + offset}: a '-> ' line "
                                    "must follow exactly one event line")
            current.expected = [line[3:]]
        elif not line.strip() or line.startswith("#"):
            items.append(line)
        else:
            if current is not None and not current.expected:
                raise DocumentError(f"{block.path}:{current.lineno}: event line without "
                                    "its '-> ' line")
            current = Step(block.lineno + offset, [line], [], run=line, prefix="-> ")
            items.append(current)
    if current is not None and not current.expected:
        raise DocumentError(f"{block.path}:{current.lineno}: event line without its '-> ' line")
    return items


def _trim(lines: list[str]) -> list[str]:
    out = list(lines)
    while out and not out[-1].strip():
        out.pop()
    return out


# -- sessions ----------------------------------------------------------------


@dataclass
class Session:
    """Blocks that share a directory and background processes, run in order."""

    name: str
    blocks: list[Block]
    skipped: str | None = None
    error: str | None = None
    elapsed: float = 0.0

    @property
    def steps(self) -> list[Step]:
        """Every step of the session, in order."""
        return [s for b in self.blocks for s in b.steps]

    def failures(self) -> list[Step]:
        """Steps whose output differs from the document (after normalising)."""
        norm = normaliser(self.fixed_ports())
        out = []
        for block in self.blocks:
            check = norm if "any-numbers" not in block.options else normaliser(
                self.fixed_ports(), any_numbers=True)
            for step in block.steps:
                if step.actual is None:
                    continue
                if [check(x) for x in step.expected] != [check(x) for x in step.actual]:
                    out.append(step)
        return out

    def fixed_ports(self) -> set[int]:
        """The ports the document's commands name (mapped to free ones when run)."""
        ports: set[int] = set()
        for step in self.steps:
            for m in HOST_PORT.finditer(step.run):
                ports.add(int(m.group(2)))
            for m in PORT_OPTION.finditer(step.run):
                ports.add(int(m.group(2)))
        for block in self.blocks:
            if block.kind == "file":
                for m in HOST_PORT.finditer("\n".join(block.lines)):
                    ports.add(int(m.group(2)))
        ports.discard(0)
        return ports

    def report(self) -> str:
        """Every difference as a unified diff under the command that made it."""
        parts = []
        if self.error:
            parts.append(f"session {self.name!r}: {self.error}")
        for step in self.failures():
            block = next(b for b in self.blocks if step in b.steps)
            parts.append(f"{block.path}:{step.lineno}: {step.label}")
            parts.extend("    " + d for d in difflib.unified_diff(
                step.expected, step.actual or [], "shown", "actual", lineterm="", n=2))
        return "\n".join(parts)


def sessions(document: Document) -> list[Session]:
    """Group the runnable blocks into sessions, in order of their first block."""
    found: dict[str, Session] = {}
    alone = 0
    for block in document.blocks:
        if block.kind in ("skip", "output"):
            continue
        if block.session is None:
            alone += 1
            name = f"line-{block.lineno}"
            found[name] = Session(name, [block])
        else:
            found.setdefault(block.session, Session(block.session, [])).blocks.append(block)
    return list(found.values())


# -- running -----------------------------------------------------------------


def normaliser(fixed_ports: Iterable[int], any_numbers: bool = False) -> Callable[[str], str]:
    """What two lines are compared by: the parts that vary between runs are masked."""
    fixed = set(fixed_ports)

    def port(m: re.Match[str]) -> str:
        return m.group(0) if int(m.group(2)) in fixed else f"{m.group(1)}:<port>"

    def norm(line: str) -> str:
        line = HOST_PORT.sub(port, line.rstrip().expandtabs())
        line = TIMESTAMP.sub("<timestamp>", line)
        line = STATE_FILE.sub("<state file>", line)
        line = RATE.sub(r" <rate> \1/s", line)
        line = DURATION.sub(" <duration>", line)
        if any_numbers:  # right-aligned numbers move their column too
            line = re.sub(r" +", " ", NUMBER.sub("<n>", line))
        return line

    return norm


def _ephemeral_low() -> int:
    """The first port the system hands out to ``bind(0)`` (Linux: 32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port(taken: set[int]) -> int:
    """A free loopback port below the ephemeral range, so no other process's ``bind(0)``
    (the test suite's emulators) can be given it between this check and the example's
    server binding it: it would answer in the example's place."""
    low = _ephemeral_low()
    first = max(1024, low - 12_000)
    while True:
        port = random.randrange(first, low)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port


def environment(bin_dir: str | None = None) -> dict[str, str]:
    """The environment every example runs in (see the module docstring)."""
    bin_dir = bin_dir or os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TALON_", "PYTEST_", "COV_CORE_"))}
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", os.defpath), COLUMNS="80",
               LINES="24", PYTHONUNBUFFERED="1", TERM="dumb", LC_ALL="C.UTF-8")
    if env.get("PYTHONPYCACHEPREFIX"):
        # bytecode goes to that cache (the test suite's), never into the checkout
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Runner:
    """Runs one session in a fresh directory, filling in each step's ``actual``."""

    def __init__(self, session: Session, env: dict[str, str], samples: Path | None = ROOT /
                 "samples", keep: bool = False) -> None:
        self.session = session
        self.env = env
        self.samples = samples
        self.keep = keep
        self.ports: dict[int, int] = {}
        self.rc = 0
        self.background: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.dir = Path(".")

    def run(self) -> Session:
        session = self.session
        if shutil.which("talon-classic", path=self.env["PATH"]) is None:
            session.error = ("talon-classic is not installed in this Python's environment "
                             "(pip install -e .)")
            return session
        if any(re.search(r"(^|[|;&(]\s*)curl\b", s.run) for s in session.steps) and \
                shutil.which("curl", path=self.env["PATH"]) is None:
            session.skipped = "curl is not installed (the example uses it)"
            return session
        started = time.monotonic()
        taken: set[int] = set()
        self.ports = {p: _free_port(taken) for p in sorted(session.fixed_ports())}
        with tempfile.TemporaryDirectory(prefix=f"readme-check-{session.name}-") as tmp:
            self.dir = Path(tmp)
            # the state directory too: never the real home's
            self.env = {**self.env, "XDG_STATE_HOME": str(self.dir / ".state")}
            if self.samples is not None and self.samples.is_dir():
                shutil.copytree(self.samples, self.dir / "samples")
            try:
                blocks = session.blocks
                i = 0
                while i < len(blocks):
                    if blocks[i].kind == "cases":  # consecutive ones: one transform run
                        j = i
                        while j < len(blocks) and blocks[j].kind == "cases":
                            j += 1
                        self._cases(blocks[i:j])
                        i = j
                        continue
                    self._block(blocks[i])
                    i += 1
            except Exception as exc:  # noqa: BLE001 - reported with the session
                session.error = f"{type(exc).__name__}: {exc}"
            finally:
                self._stop_background()
                if self.keep:
                    kept = Path(tempfile.mkdtemp(prefix=f"readme-check-{session.name}-kept-"))
                    shutil.copytree(self.dir, kept, dirs_exist_ok=True)
                    print(f"session {session.name}: files kept in {kept}", file=sys.stderr)
        session.elapsed = time.monotonic() - started
        return session

    # -- ports
    def _to_run(self, text: str) -> str:
        """The document's fixed ports replaced by the free ones."""
        def host(m: re.Match[str]) -> str:
            port = self.ports.get(int(m.group(2)))
            return f"{m.group(1)}:{port}" if port else m.group(0)

        def option(m: re.Match[str]) -> str:
            port = self.ports.get(int(m.group(2)))
            return f"{m.group(1)}{port}" if port else m.group(0)

        return PORT_OPTION.sub(option, HOST_PORT.sub(host, text))

    def _to_document(self, output: bytes) -> list[str]:
        """Output as document lines: free ports mapped back, tabs expanded."""
        text = output.decode("utf-8", errors="replace")
        for shown, real in self.ports.items():
            text = re.sub(rf"\b{real}\b", str(shown), text)
        return _trim([x.rstrip().expandtabs() for x in text.splitlines()])

    # -- blocks
    def _block(self, block: Block) -> None:
        if block.kind == "file":
            assert block.file is not None
            target = self.dir / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self._to_run("\n".join(block.lines) + "\n"), encoding="utf-8")
        elif block.kind == "shell":
            for step in block.steps:
                if step.background:
                    self._start(step)
                else:
                    self._command(step)
        elif block.kind == "python":
            for step in block.steps:
                step.actual = self._output([sys.executable, "-"], self._to_run(step.run))[1]

    def _output(self, argv: list[str], stdin: str | None = None) -> tuple[int, list[str]]:
        """Run one process (its own group, killed whole on a timeout); exit status and output."""
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None
                                else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=self.dir, env=self.env,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(stdin.encode() if stdin is not None else None,
                                      timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return 124, self._to_document(out) + [
                f"<readme_check: still running after {COMMAND_TIMEOUT:.0f} s; stopped>"]
        return proc.returncode, self._to_document(out)

    def _command(self, step: Step) -> None:
        script = f"(exit {self.rc})\n{self._to_run(step.run)}\n"
        self.rc, step.actual = self._output(["bash", "--noprofile", "--norc", "-c", script])

    def _start(self, step: Step) -> None:
        log = open(self.dir.parent / f"{self.dir.name}.bg{len(self.background)}.log",  # noqa: SIM115
                   "w+b")
        proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c",
                                 self._to_run(step.run)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.dir, env=self.env, start_new_session=True)
        self.background.append((proc, log))
        ports = [self.ports[int(m.group(2))] for m in PORT_OPTION.finditer(step.run)
                 if int(m.group(2)) in self.ports]
        deadline = time.monotonic() + READY_TIMEOUT
        for port in ports:
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(port):
                    break
                time.sleep(0.05)
        _settle(log, proc)
        log.seek(0)
        step.actual = self._to_document(log.read())
        self.rc = 0

    def _stop_background(self) -> None:
        for proc, _ in self.background:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)  # its own group: only what we started
        for proc, log in self.background:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
            with contextlib.suppress(OSError):
                os.unlink(log.name)
        self.background = []

    def _cases(self, blocks: list[Block]) -> None:
        """Mapping cases through one ``talon-classic transform`` run."""
        steps = [s for b in blocks for s in b.steps]
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", CASES_COMMAND],
                              input="".join(s.run + "\n" for s in steps).encode(),
                              capture_output=True, cwd=self.dir, env=self.env,
                              timeout=COMMAND_TIMEOUT, check=False)
        out = proc.stdout.decode("utf-8", errors="replace").splitlines()
        if proc.returncode != 0 or len(out) != len(steps):
            first = blocks[0]
            raise DocumentError(f"{first.path}:{first.lineno}: {CASES_COMMAND} failed "
                                f"(exit {proc.returncode}): "
                                f"{proc.stderr.decode(errors='replace').strip()[:500]}")
        for step, line in zip(steps, out, strict=True):
            step.actual = [TRANSFORM_HEAD.sub("{", line)]


def _answers(port: int) -> bool:
    """Does something answer HTTP on this loopback port?"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/_readme_check_ready")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _settle(log: IO[bytes], proc: subprocess.Popen[bytes], quiet: float = 0.2,
            limit: float = 3.0, first: float = 1.0) -> None:
    """Wait until a background command's output has stopped growing for ``quiet`` s,
    counting from its first output (or from ``first`` s, for one that prints nothing)."""
    start = time.monotonic()
    deadline = start + limit
    size, since = -1, start
    while time.monotonic() < deadline:
        now_size = os.fstat(log.fileno()).st_size
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif proc.poll() is not None:
            return
        elif time.monotonic() - since >= quiet and (size > 0 or time.monotonic() - start >= first):
            return
        time.sleep(0.03)


def run_sessions(found: list[Session], env: dict[str, str] | None = None, jobs: int = 4,
                 keep: bool = False) -> list[Session]:
    """Run sessions side by side (each mostly waits on its commands); returns them."""
    env = env or environment()
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(lambda s: Runner(s, env, keep=keep).run(), found))


# -- updating ----------------------------------------------------------------


def merged(expected: list[str], actual: list[str], norm: Callable[[str], str]) -> list[str]:
    """The new output: shown lines kept wherever they still match, real ones elsewhere."""
    matcher = difflib.SequenceMatcher(None, [norm(x) for x in expected],
                                      [norm(x) for x in actual], autojunk=False)
    out: list[str] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        out.extend(expected[i1:i2] if op == "equal" else actual[j1:j2])
    return out


def rewrite(document: Document, found: list[Session]) -> str:
    """The document's text with every run block's output replaced by the real one."""
    lines = list(document.lines)
    by_block: dict[int, Session] = {}
    for session in found:
        for block in session.blocks:
            by_block[id(block.output or block)] = session
    for block in sorted(document.blocks, key=lambda b: b.start, reverse=True):
        owner = by_block.get(id(block))
        if owner is None or owner.skipped or block.kind not in ("shell", "cases", "output"):
            continue
        norm = normaliser(owner.fixed_ports(), "any-numbers" in block.options)
        new: list[str] = []
        for item in block.items:
            if isinstance(item, str):
                new.append(item)
                continue
            output = item.expected if item.actual is None else merged(
                item.expected, item.actual, norm)
            new += item.head + [item.prefix + x for x in output] + [""] * item.trailing_blank
        pad = " " * block.indent
        lines[block.start:block.end] = [pad + x if x.strip() else "" for x in _trim(new)]
    return "\n".join(lines) + "\n"


# -- command line --------------------------------------------------------------


def documents(paths: Iterable[str | Path] | None = None) -> Iterator[Path]:
    """The given files, or README.rst and docs/*.rst."""
    if paths:
        yield from (Path(p) for p in paths)
        return
    yield ROOT / "README.rst"
    yield from sorted((ROOT / "docs").glob("*.rst"))


def load(path: str | Path) -> Document:
    """Parse one file."""
    path = Path(path)
    try:
        shown = str(path.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(path)
    return parse(path.read_text(encoding="utf-8"), shown)


def main(argv: list[str] | None = None) -> int:
    """Check (or ``--update``) the documents; 0 all match, 1 differences, 2 a document error."""
    parser = argparse.ArgumentParser(prog="python docs/readme_check.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="default: README.rst and docs/*.rst")
    parser.add_argument("--update", action="store_true",
                        help="rewrite the shown output from real runs (review the diff)")
    parser.add_argument("--session", action="append", metavar="NAME",
                        help="only this session (repeatable; 'line-N' for a block alone)")
    parser.add_argument("--jobs", type=int, default=4, help="sessions run side by side")
    parser.add_argument("--keep", action="store_true", help="keep each session's files")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per session")
    args = parser.parse_args(argv)

    status = 0
    for path in documents(args.files):
        try:
            document = load(path)
        except DocumentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        found = [s for s in sessions(document) if not args.session or s.name in args.session]
        run_sessions(found, jobs=args.jobs, keep=args.keep)
        for session in found:
            state = ("skipped: " + session.skipped if session.skipped else
                     "error" if session.error else
                     f"{len(session.failures())} differences" if session.failures() else "ok")
            if args.verbose or state != "ok":
                print(f"{document.path}: session {session.name} ({session.elapsed:.1f}s): "
                      f"{state}")
            if session.error or (session.failures() and not args.update):
                print(session.report())
                status = 1
        if args.update:
            text = rewrite(document, found)
            if text != "\n".join(document.lines) + "\n":
                Path(path).write_text(text, encoding="utf-8")
                print(f"{document.path}: updated; review with git diff")
    return status


if __name__ == "__main__":
    sys.exit(main())
