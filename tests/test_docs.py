"""The docs work as written: README.md and docs/*.md link only to files (and headings) that exist, and every command
in their ```bash blocks, and every command quoted inline (`hf-llm merge ADAPTER_DIR --output_dir DIR`), parses.

A command is checked by what it starts with:

- `hf-llm SUB ...`: `hf_llm.cli.build_parser().parse_known_args`, with no argument left over unless the command
  forwards its flags (`eval`: its flags are then checked against `eval/evaluate_model.py --help`; `serve`: the flags
  are `transformers serve`'s, so only the subcommand is checked).
- `accelerate launch [FLAGS] [tests/distributed_shim.py] train_scripts/<x>.py ...`: accelerate's own parser for its
  flags, then every `--flag` after the script must be in `python train_scripts/<x>.py --help`.
- `python <script>.py ...` (train_scripts/, eval/, benchmarks/, tests/): every `--flag` in the script's `--help`
  (a script given no flags is only checked to exist, so `--help` never starts something like tests/hub_server.py).
- `make TARGET`: a target of the Makefile; `pip install -e ".[extra]"`: an extra of pyproject.toml.

Every repository path a command names (`--config`, `--config_file`, scripts, recipes) must exist. A command that
needs a GPU or the Hugging Face Hub says so in a trailing comment (`# GPU only`, `# needs the Hugging Face Hub`);
its flags are still checked, as flag names do not depend on the hardware. A line that cannot be checked at all (a
`curl` to a running server, shell placeholders) says `# illustrative` and is skipped; any other command fails here,
so a new kind of command gets a checker or a marker, never silence. Inline commands holding a placeholder the shell
could not take (`<stage>`, `...`) are skipped; `DIR`-style placeholders parse like any path.

The `--help` texts come from one subprocess that runs each script as `__main__` with `--help` (`runpy`), so the
heavy imports (torch, transformers, TRL) are paid once rather than once per script.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKER_SKIP = re.compile(r"#.*\billustrative\b", re.IGNORECASE)
MARKER_NEEDS = re.compile(r"#.*(\bGPU only\b|needs the Hugging Face Hub)", re.IGNORECASE)
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
# Repository paths a command may name; each must exist (outputs/, data/ and the like are the user's).
REPO_PATH = re.compile(r"^(accelerate_configs|train_scripts|eval|benchmarks|tests|requirements|docs)/\S+$")
SCRIPT_DIRS = ("train_scripts/", "eval/", "benchmarks/", "tests/")


# ---------------------------------------------------------------- reading the docs


def doc_name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    lines: tuple[str, ...]


def code_blocks(path: Path) -> list[CodeBlock]:
    """The fenced code blocks of a markdown file (an unclosed fence runs to the end, as on GitHub)."""
    blocks, fence, start, language, body = [], None, 0, "", []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence, start, language, body = match.group(1), number, match.group(2), []
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) and not match.group(2):
            blocks.append(CodeBlock(path, start, language, tuple(body)))
            fence = None
        else:
            body.append(line)
    if fence is not None:
        blocks.append(CodeBlock(path, start, language, tuple(body)))
    return blocks


def prose(path: Path) -> str:
    """The file's text with fenced blocks and inline code blanked out (line numbers kept)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in code_blocks(path):
        for index in range(block.line - 1, min(block.line + len(block.lines), len(lines))):
            lines[index] = ""
    return re.sub(r"(`+)(?:(?!\1).)+\1", "", "\n".join(lines))


def split_comment(line: str, quote: str | None = None) -> tuple[str, str, str | None]:
    """`code  # comment` -> (code, comment, the quote still open at the end of the line, if any).

    A `#` inside quotes or inside a word is not a comment; `quote` is the quote left open by the previous line.
    """
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index], line[index:], None
    return line, "", quote


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    text: str  # the whole command, continuation lines joined
    comment: str

    @property
    def id(self) -> str:
        return f"{doc_name(self.path)}:{self.line}"

    @property
    def tokens(self) -> list[str]:
        tokens = shlex.split(self.text)
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):  # VAR=value prefixes
            tokens.pop(0)
        return tokens


def bash_commands(path: Path) -> list[Command]:
    commands = []
    for block in code_blocks(path):
        if block.language not in ("bash", "sh", "shell"):
            continue
        pending, first, comment, quote = [], 0, "", None
        for offset, line in enumerate(block.lines, start=1):
            code, comment_part, quote = split_comment(line, quote)
            if not pending:
                first = block.line + offset
                if not code.strip():
                    continue  # blank or comment-only line
            comment = comment_part
            if quote:  # a quoted string runs on to the next line (e.g. a JSON body)
                pending.append(code + "\n")
                continue
            if code.rstrip().endswith("\\"):
                pending.append(code.rstrip()[:-1] + " ")
                continue
            pending.append(code)
            commands.append(Command(path, first, "".join(pending).strip(), comment))
            pending = []
        assert not pending, f"{doc_name(path)}:{first}: a command ends in a line continuation"
    return commands


INLINE_PREFIXES = ("hf-llm ", "accelerate launch ", "python ", "make ")


def inline_commands(path: Path) -> list[Command]:
    """Commands quoted in running text or tables (`hf-llm merge ADAPTER_DIR --output_dir DIR`), checked like the
    bash blocks' unless they hold a placeholder the shell could not take (`<stage>`, `...`)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in code_blocks(path):
        for index in range(block.line - 1, min(block.line + len(block.lines), len(lines))):
            lines[index] = ""
    text, commands = "\n".join(lines), []
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        span = " ".join(match.group(1).split())
        if span.startswith(INLINE_PREFIXES) and not any(mark in span for mark in ("<", "...", "…")):
            commands.append(Command(path, text.count("\n", 0, match.start()) + 1, span, ""))
    return commands


ALL_COMMANDS = [command for path in DOC_FILES for command in bash_commands(path)]
CHECKED_COMMANDS = [command for command in ALL_COMMANDS if not MARKER_SKIP.search(command.comment)]
INLINE_COMMANDS = [command for path in DOC_FILES for command in inline_commands(path)]


# ---------------------------------------------------------------- links


def github_anchors(path: Path) -> set[str]:
    """The heading anchors GitHub gives a markdown file (lowercase, punctuation dropped, spaces to hyphens)."""
    anchors, seen = set(), {}
    text = path.read_text(encoding="utf-8").splitlines()
    blocked = {i for block in code_blocks(path) for i in range(block.line - 1, block.line + len(block.lines) + 1)}
    for index, line in enumerate(text):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match or index in blocked:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image that is not a URL; link text may wrap across lines."""
    text, links = prose(path), []
    for match in LINK.finditer(text):
        target = match.group(1)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            links.append((text.count("\n", 0, match.start(1)) + 1, target))
    return links


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_name)
def test_relative_links_resolve(path):
    broken = []
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{doc_name(path)}:{number}: {target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in github_anchors(destination):
            broken.append(f"{doc_name(path)}:{number}: {target} (no heading #{anchor} in {destination.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_stays_short():
    """Issue 21: the README is what hf_llm is, the set-up, the results and the stage table; the rest lives in docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move a topic into docs/ (and link it from docs/README.md)"


def test_every_docs_page_is_in_the_index():
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / target.partition("#")[0]).resolve() for _, target in relative_links(index)}
    missing = [doc_name(page) for page in DOC_FILES[1:] if page != index and page.resolve() not in linked]
    assert not missing, f"docs/README.md does not link to {missing}"


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_name)
def test_code_blocks_name_their_language(path):
    """An unlabeled block could hide a command from the checks below: label it (bash, python, text, ...)."""
    unlabeled = [f"{doc_name(path)}:{block.line}" for block in code_blocks(path) if not block.language]
    assert not unlabeled, f"code blocks without a language: {unlabeled}"


# ---------------------------------------------------------------- commands


def script_and_args(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The repository script a command runs and the arguments it passes it (None: no script of ours)."""
    if tokens[:1] in (["python"], ["python3"]) and len(tokens) > 1:
        return tokens[1], tokens[2:]
    if tokens[:2] == ["accelerate", "launch"]:
        for index, token in enumerate(tokens):
            if token.startswith("train_scripts/") and token.endswith(".py"):
                return token, tokens[index + 1 :]
    if tokens[:2] == ["hf-llm", "eval"]:
        return "eval/evaluate_model.py", tokens[2:]
    return None


HELP_RUNNER = r"""
import contextlib, io, json, os, runpy, sys, traceback
out_file, scripts = sys.argv[1], sys.argv[2:]
helps = {}
for script in scripts:
    sys.argv = [script, "--help"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            runpy.run_path(script, run_name="__main__")
        helps[script] = {"error": "--help did not exit"}
    except SystemExit as exit:
        helps[script] = {"help": buffer.getvalue()} if exit.code in (0, None) else {"error": f"exit {exit.code}"}
    except BaseException:
        helps[script] = {"error": traceback.format_exc()}
    finally:
        sys.path.pop(0)
with open(out_file, "w") as f:
    json.dump(helps, f)
"""


@functools.cache
def script_helps() -> dict[str, dict[str, str]]:
    """`python <script> --help` for every script the docs' commands name, from one subprocess."""
    import os
    import tempfile

    scripts = set()
    for command in CHECKED_COMMANDS + INLINE_COMMANDS:
        found = script_and_args(command.tokens)
        if found and any(arg.startswith("--") for arg in found[1]) and (ROOT / found[0]).is_file():
            scripts.add(found[0])
    scripts = sorted(scripts)
    with tempfile.TemporaryDirectory() as tmp:
        out_file = Path(tmp) / "helps.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "COLUMNS": "120"}
        result = subprocess.run(
            [sys.executable, "-c", HELP_RUNNER, str(out_file), *scripts],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(out_file.read_text())


def script_flags(script: str) -> set[str]:
    """The `--flags` in the usage lines of `python <script> --help`."""
    entry = script_helps().get(script)
    assert entry is not None, f"{script}: no --help collected"
    assert "help" in entry, f"python {script} --help failed: {entry['error'][-2000:]}"
    usage = entry["help"].split("\n\n")[0]
    return set(re.findall(r"(?:^|[\s\[|(])(--?[A-Za-z][\w-]*)", usage))


def check_repo_paths(tokens: list[str]) -> None:
    for token in tokens:
        value = token.split("=", 1)[1] if token.startswith("-") and "=" in token else token
        if REPO_PATH.match(value) and not any(char in value for char in "<>*{}"):
            assert (ROOT / value).exists(), f"{value}: no such file in the repository"


def check_script_args(script: str, args: list[str]) -> None:
    """Every `--flag` in `args` is a flag of `script`; `--config FILE` names a file that exists."""
    assert (ROOT / script).is_file(), f"{script}: no such script"
    for index, token in enumerate(args):
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        if name == "--config":  # TrlParser's recipe flag (not in the usage line)
            assert "=" in token or index + 1 < len(args), "--config needs a recipe file"
            value = token.split("=", 1)[1] if "=" in token else args[index + 1]
            assert (ROOT / value).is_file(), f"--config {value}: no such file"
            continue
        assert name in script_flags(script), f"{name} is not a flag of {script} (python {script} --help)"


def hf_llm_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """`hf-llm`'s parser and its subcommands' parsers, by name."""
    from hf_llm.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return parser, dict(commands.choices)


def check_hf_llm(args: list[str]) -> None:
    parser, commands = hf_llm_parsers()
    for command_parser in [parser, *commands.values()]:
        command_parser.allow_abbrev = False  # the docs spell flags out
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            namespace, rest = parser.parse_known_args(args)
    except SystemExit:
        pytest.fail(f"hf-llm {' '.join(args)}: {errors.getvalue().strip()}")
    if getattr(namespace, "forwards_argv", False):
        if namespace.command == "eval":
            check_script_args("eval/evaluate_model.py", rest)
    else:
        assert not rest, f"hf-llm {namespace.command}: unrecognized arguments {rest}"


def check_accelerate_launch(args: list[str]) -> None:
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    parser.allow_abbrev = False
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            launch = parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"accelerate launch {' '.join(args)}: {errors.getvalue().strip()}")
    if launch.config_file:
        assert (ROOT / launch.config_file).is_file(), f"--config_file {launch.config_file}: no such file"
    argv = [launch.training_script, *launch.training_script_args]
    scripts = [
        index for index, token in enumerate(argv) if token.startswith("train_scripts/") and token.endswith(".py")
    ]
    assert scripts, f"accelerate launch {' '.join(args)}: no train_scripts/<stage>.py to launch"
    for token in argv[: scripts[0]]:  # a wrapper such as tests/distributed_shim.py
        assert (ROOT / token).is_file(), f"{token}: no such file"
    check_script_args(argv[scripts[0]], argv[scripts[0] + 1 :])


def check_python(args: list[str]) -> None:
    assert args and args[0].startswith(SCRIPT_DIRS), f"python {' '.join(args)}: not a script of this repository"
    check_script_args(args[0], args[1:])


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {
        target
        for targets in re.findall(r"^([A-Za-z0-9_.$()/-][^:=\n]*):(?!=)", text, re.MULTILINE)
        for target in targets.split()
    }


def check_make(args: list[str]) -> None:
    targets = [arg for arg in args if "=" not in arg and not arg.startswith("-")]
    assert targets, "make with no target: name it"
    unknown = set(targets) - makefile_targets()
    assert not unknown, f"make {' '.join(sorted(unknown))}: no such target in the Makefile"


def pyproject_extras() -> set[str]:
    """The names under `[project.optional-dependencies]` (no tomllib: Python 3.10 is supported)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section, re.MULTILINE))


def check_pip(args: list[str]) -> None:
    assert args[:1] == ["install"], f"pip {' '.join(args)}: only pip install is checked"
    extras = pyproject_extras()
    for index, token in enumerate(args[1:], start=1):
        if args[index - 1] == "-c":
            assert (ROOT / token).is_file(), f"-c {token}: no such file"
        elif token.startswith("-"):
            continue
        else:
            match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", token)
            assert match, f"pip install {token}: only this checkout (., .[extra]) is checked; mark it otherwise"
            unknown = set((match.group(1) or "").split(",")) - extras - {""}
            assert not unknown, f"pip install {token}: no extra {sorted(unknown)} in pyproject.toml"


CHECKERS = {
    "hf-llm": check_hf_llm,
    "python": check_python,
    "python3": check_python,
    "make": check_make,
    "pip": check_pip,
}


def check_command(command: Command) -> None:
    tokens = command.tokens
    assert tokens, f"{command.id}: empty command"
    assert not {"&&", "||", ";", "|"} & set(tokens), f"{command.id}: one command per line, please"
    try:
        check_repo_paths(tokens)
        if tokens[0] == "accelerate":
            assert tokens[1:2] == ["launch"], "only accelerate launch is checked"
            check_accelerate_launch(tokens[2:])
        elif tokens[0] in CHECKERS:
            CHECKERS[tokens[0]](tokens[1:])
        else:
            pytest.fail(f"{tokens[0]}: no checker for this command; add one here or mark it `# illustrative`")
    except AssertionError as error:
        raise AssertionError(f"{command.id}: {command.text}\n{error}") from None


@pytest.mark.parametrize("command", CHECKED_COMMANDS, ids=lambda command: command.id)
def test_doc_command_parses(command):
    check_command(command)


@pytest.mark.parametrize("command", INLINE_COMMANDS, ids=lambda command: command.id)
def test_inline_command_parses(command):
    if command.tokens[0] == "hf-llm" and len(command.tokens) == 2:  # a command's name in a sentence
        assert command.tokens[1] in hf_llm_parsers()[1], f"{command.id}: no command {command.text}"
    else:
        check_command(command)


def test_commands_were_found():
    """The collection itself works: the README's set-up commands and the stage scripts are all seen."""
    texts = [command.text for command in ALL_COMMANDS]
    assert any(text.startswith("make pipeline") for text in texts)
    assert any(text.startswith("hf-llm env") for text in texts)
    launched = {(script_and_args(command.tokens) or ("",))[0] for command in CHECKED_COMMANDS}
    for stage in ("pretrain", "classifier", "sft", "reward", "ppo", "dpo", "train_tokenizer"):
        assert f"train_scripts/{stage}.py" in launched, f"no checked command runs train_scripts/{stage}.py"
    needs = [command for command in ALL_COMMANDS if MARKER_NEEDS.search(command.comment)]
    assert needs, "no command is marked GPU-only or Hub-only: has the marker wording changed?"
