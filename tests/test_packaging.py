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
    minimum = _minimum()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool.ruff".split(".")[0]]["ruff"]["target-version"] == "py%d%d" % minimum
    assert pyproject["tool"]["mypy"]["python_version"] == "%d.%d" % minimum
    assert sys.version_info[:2] >= minimum
    cfg = (ROOT / "setup.cfg").read_text()
    assert "Python :: %d.%d\n" % minimum in cfg


def test_typed_package_and_public_names() -> None:
    assert (Path(talon_classic.__file__).parent / "py.typed").exists()
    for name in talon_classic.__all__:
        assert getattr(talon_classic, name) is not None, name
