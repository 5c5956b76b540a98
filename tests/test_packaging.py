"""What setup.cfg declares agrees with the code, the linters and the interpreter."""

from __future__ import annotations

import configparser
import sys
import tomllib
from pathlib import Path

import talon_classic

ROOT = Path(__file__).resolve().parents[1]


def _minimum() -> tuple[int, int]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    spec = cfg["options"]["python_requires"].strip()
    assert spec.startswith(">=")
    major, minor = spec[2:].split(".")[:2]
    return int(major), int(minor)


def test_declared_minimum_python_is_what_the_tools_target() -> None:
    major, minor = minimum = _minimum()
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert tool["ruff"]["target-version"] == f"py{major}{minor}"
    assert tool["mypy"]["python_version"] == f"{major}.{minor}"
    assert sys.version_info[:2] >= minimum
    assert f"Python :: {major}.{minor}\n" in (ROOT / "setup.cfg").read_text()


def test_typed_package_and_public_names() -> None:
    assert (Path(talon_classic.__file__).parent / "py.typed").exists()
    for name in talon_classic.__all__:
        assert getattr(talon_classic, name) is not None, name


def test_every_exception_class_is_exported() -> None:
    from talon_classic import exceptions

    defined = {name for name, obj in vars(exceptions).items()
               if isinstance(obj, type) and issubclass(obj, exceptions.TalonClassicError)}
    assert defined <= set(talon_classic.__all__)
