"""`hf-llm env`: what a bug report needs, like `transformers env` and `accelerate env`, and the tested-versions check.

The report lists every dependency's version, torch's device and attention kernels, whether the installed versions
match the lock the suite passed with (`requirements/cpu.txt` in the checkout) and where the caches live.

Every stage parses its arguments through `hf_llm.parser.RecipeParser`, which calls
[`warn_if_untested_versions`]: running on a transformers or TRL release outside [`TESTED_VERSIONS`] logs one warning.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: The oldest and newest release of each fast-moving library the suite has passed with. The oldest is pyproject's
#: floor (transformers 5.24 renamed the KV cache argument to `cache`; TRL 1.12 is the last release with PPOTrainer);
#: the newest is the lock's version (tests/test_environment.py keeps the two in step).
TESTED_VERSIONS = {"transformers": ("5.24.0", "5.25.0"), "trl": ("1.12.0", "1.12.0")}

LOCK_FILE = "requirements/cpu.txt"


def lock_path() -> Path | None:
    """The lock of the checkout hf_llm runs from (`None` when hf_llm was installed from a wheel)."""
    path = Path(__file__).resolve().parents[1] / LOCK_FILE
    return path if path.is_file() else None


def read_lock(path: Path) -> dict[str, str]:
    """`{normalized package name: version}` of a `name==version` lock file."""
    pinned = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pinned[normalize(name)] = version.strip()
    return pinned


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (`Huggingface_Hub` -> `huggingface-hub`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """`{normalized package name: version}` of every distribution in this environment."""
    versions = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[normalize(name)] = dist.version
    return versions


def lock_mismatches(lock: dict[str, str], installed: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """`{name: (locked, installed or None)}` for every locked package installed at another version, or missing.

    hf_llm's own dependencies missing from the environment count; the lock's test-only packages (pytest, gradio, ...)
    are skipped when not installed, since `make pipeline` installs only what the stages need.
    """
    required = {normalize(Requirement(spec).name) for spec in metadata.requires("hf_llm") or [] if "extra" not in spec}
    mismatches = {}
    for name, version in sorted(lock.items()):
        have = installed.get(name)
        if have is None and name not in required:
            continue
        if have is None or Version(have) != Version(version):
            mismatches[name] = (version, have)
    return mismatches


def requirement(name: str) -> str:
    """hf_llm's requirement on `name` as pyproject.toml states it, e.g. `transformers<6,>=5.24`."""
    for spec in metadata.requires("hf_llm") or []:
        parsed = Requirement(spec)
        if normalize(parsed.name) == normalize(name) and parsed.marker is None:
            return f"{parsed.name}{parsed.specifier}"
    raise KeyError(f"hf_llm does not depend on {name}")


def dependency_names() -> list[str]:
    """hf_llm's direct dependencies, extras included, in pyproject order."""
    names = []
    for spec in metadata.requires("hf_llm") or []:
        name = Requirement(spec).name
        if name not in names and normalize(name) != "hf-llm":
            names.append(name)
    return names


def torch_report() -> dict[str, str]:
    """torch's build, the devices it sees and the attention kernels it can use."""
    import torch
    from transformers.utils import is_flash_attn_2_available, is_torch_flex_attn_available

    report = {
        "torch build": f"{torch.__version__} (CUDA {torch.version.cuda})" if torch.version.cuda else torch.__version__,
        "CPU threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
        report["accelerator"] = f"cuda: {torch.cuda.device_count()} x {', '.join(sorted(set(names)))}"
        report["bf16 supported"] = str(torch.cuda.is_bf16_supported())
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        report["accelerator"] = "mps"
    else:
        report["accelerator"] = "none (CPU only)"
    kernels = ["eager", "sdpa"]
    if is_torch_flex_attn_available():
        kernels.append("flex_attention")
    if is_flash_attn_2_available():
        kernels.append("flash_attention_2")
    report["attention kernels"] = ", ".join(kernels)
    return report


def cache_report() -> dict[str, str]:
    """Where models, datasets, remote code and hf_llm's own data are cached, and which Hub endpoint is used."""
    from datasets import config as datasets_config
    from huggingface_hub import constants as hub_constants
    from transformers.utils import HF_MODULES_CACHE

    from hf_llm.data.pydocs import hf_llm_cache_dir

    return {
        "HF_HOME": hub_constants.HF_HOME,
        "Hub cache (models)": hub_constants.HF_HUB_CACHE,
        "datasets cache": str(datasets_config.HF_DATASETS_CACHE),
        "remote code (HF_MODULES_CACHE)": HF_MODULES_CACHE,
        "hf_llm cache (pydocs)": str(hf_llm_cache_dir()),
        "Hub endpoint": hub_constants.ENDPOINT,
        "offline (HF_HUB_OFFLINE)": str(hub_constants.HF_HUB_OFFLINE),
    }


def untested_versions(installed: dict[str, str] | None = None) -> dict[str, str]:
    """`{library: installed version}` for each library of [`TESTED_VERSIONS`] installed outside its tested range."""
    installed = installed if installed is not None else installed_versions()
    outside = {}
    for name, (oldest, newest) in TESTED_VERSIONS.items():
        have = installed.get(name)
        if have is not None and not Version(oldest) <= Version(have) <= Version(newest):
            outside[name] = have
    return outside


def warn_if_untested_versions() -> None:
    """Log one warning when transformers or TRL is outside the versions hf_llm was tested with."""
    outside = untested_versions()
    if not outside:
        return
    have = ", ".join(f"{name} {version}" for name, version in outside.items())
    tested = ", ".join(
        f"{name} {low}" + (f" to {high}" if high != low else "") for name, (low, high) in TESTED_VERSIONS.items()
    )
    logger.warning(
        f"hf_llm was tested with {tested}; this environment has {have}. If something breaks, install the tested "
        f"versions (pip install -c {LOCK_FILE} -e . in the checkout) and include `hf-llm env` in your bug report."
    )


def environment_report() -> dict[str, dict[str, str]]:
    """Every section `hf-llm env` prints, as `{section: {key: value}}`."""
    import hf_llm

    installed = installed_versions()
    platform_section = {
        "hf_llm": f"{hf_llm.__version__} ({Path(hf_llm.__file__).resolve().parent})",
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
    }
    dependencies = {name: installed.get(normalize(name), "not installed") for name in dependency_names()}
    lock = lock_path()
    if lock is None:
        lock_section = {"lock": f"no {LOCK_FILE} beside hf_llm (installed from a wheel?): nothing to compare"}
    else:
        mismatches = lock_mismatches(read_lock(lock), installed)
        lock_section = {"lock": str(lock), "matches the lock": "yes" if not mismatches else f"no ({len(mismatches)})"}
        for name, (locked, have) in mismatches.items():
            lock_section[f"  {name}"] = f"locked {locked}, installed {have or 'nothing'}"
    outside = untested_versions(installed)
    lock_section["tested range"] = ", ".join(
        f"{name} {low}..{high}" + (f" (installed {outside[name]}: OUTSIDE)" if name in outside else "")
        for name, (low, high) in TESTED_VERSIONS.items()
    )
    return {
        "platform": platform_section,
        "torch": torch_report(),
        "dependencies": dependencies,
        "lock": lock_section,
        "caches": cache_report(),
        "environment variables": {
            name: value
            for name, value in sorted(os.environ.items())
            if name.startswith(("HF_", "TRANSFORMERS_", "ACCELERATE_", "CUDA_VISIBLE", "TRL_")) and "TOKEN" not in name
        },
    }


def format_report(report: dict[str, dict[str, str]]) -> str:
    """The report as the `- key: value` lines `transformers env` prints, one block per section."""
    lines = ["Copy-and-paste the text below into your bug report.", ""]
    for section, values in report.items():
        lines.append(f"{section}:")
        lines.extend(f"- {key}: {value}" for key, value in values.items())
        if not values:
            lines.append("- (none set)")
        lines.append("")
    return "\n".join(lines)


def run_env(args: argparse.Namespace) -> int:
    print(format_report(environment_report()))
    return 0


def add_env_command(commands: argparse._SubParsersAction) -> None:
    """`hf-llm env`."""
    env = commands.add_parser(
        "env", help="print versions, devices, the lock check and cache paths for a bug report", description=__doc__
    )
    env.set_defaults(run=run_env)
