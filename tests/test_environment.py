"""`hf-llm env`, the lock and the tested-versions warning agree with each other and with pyproject.toml."""

import logging
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from hf_llm import environment
from hf_llm.cli import main

CHECKOUT = Path(__file__).resolve().parents[1]
LOCK = environment.read_lock(CHECKOUT / environment.LOCK_FILE)
# pyproject.toml's requirements as installed (`pip install -e .` writes them into hf_llm's metadata).
DEPENDENCIES = [Requirement(spec) for spec in metadata.requires("hf_llm") if "extra ==" not in spec]


def pyproject_requirement(name: str) -> Requirement:
    return next(requirement for requirement in DEPENDENCIES if requirement.name == name)


@pytest.mark.parametrize("name", ["transformers", "trl"])
def test_tested_range_runs_from_pyproject_floor_to_the_locked_version(name):
    oldest, newest = environment.TESTED_VERSIONS[name]
    specifier = pyproject_requirement(name).specifier
    floors = [Version(spec.version) for spec in specifier if spec.operator == ">="]
    assert floors == [Version(oldest)], f"pyproject's {name} floor and TESTED_VERSIONS disagree"
    assert Version(LOCK[name]) == Version(newest), f"{environment.LOCK_FILE} pins {name} {LOCK[name]}, not {newest}"
    assert specifier.contains(LOCK[name])


def test_lock_pins_every_dependency_but_torch():
    for requirement in DEPENDENCIES:
        name = environment.normalize(requirement.name)
        if name != "torch":
            assert name in LOCK, f"{name} is a dependency but not in {environment.LOCK_FILE}"
            assert requirement.specifier.contains(LOCK[name]), f"locked {name} {LOCK[name]} is outside {requirement}"
    assert "torch" not in LOCK  # the Makefile's TORCH picks the build (CPU or CUDA)


@pytest.mark.parametrize(
    ("transformers_version", "outside"), [("5.23.0", True), ("5.24.0", False), ("5.25.0", False), ("5.26.0", True)]
)
def test_untested_versions_are_those_outside_the_tested_range(transformers_version, outside):
    installed = {"transformers": transformers_version, "trl": "1.12.0"}
    assert environment.untested_versions(installed) == ({"transformers": transformers_version} if outside else {})


def test_an_untested_transformers_logs_one_warning_naming_the_tested_versions(monkeypatch, caplog):
    monkeypatch.setattr(environment, "installed_versions", lambda: {"transformers": "5.30.1", "trl": "1.12.0"})
    with caplog.at_level(logging.WARNING, logger="hf_llm"):
        environment.warn_if_untested_versions()
    (record,) = caplog.records
    assert "transformers 5.24.0 to 5.25.0" in record.getMessage() and "transformers 5.30.1" in record.getMessage()
    caplog.clear()
    monkeypatch.setattr(environment, "installed_versions", lambda: {"transformers": "5.25.0", "trl": "1.12.0"})
    with caplog.at_level(logging.WARNING, logger="hf_llm"):
        environment.warn_if_untested_versions()
    assert caplog.records == []


def test_lock_mismatches_name_other_versions_and_missing_dependencies_but_not_missing_test_tools():
    lock = {"transformers": "5.25.0", "datasets": "5.2.0", "pytest": "9.2.0", "peft": "0.22.0"}
    installed = {"transformers": "5.24.0", "peft": "0.22.0"}
    assert environment.lock_mismatches(lock, installed) == {
        "datasets": ("5.2.0", None),
        "transformers": ("5.25.0", "5.24.0"),
    }


def test_env_command_prints_versions_lock_check_and_caches(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for line in (
        "- transformers: ",
        "- trl: 1.12.0",
        "- matches the lock: ",
        "- Hub cache (models): ",
        "- accelerator: ",
    ):
        assert line in out
    assert f"- lock: {CHECKOUT / environment.LOCK_FILE}" in out
