"""The commands the docs show run as shown (issues 15 and 17).

Runs, verbatim and in document order, in a fresh temporary directory set up as `make demo`
leaves the checkout (``.venv``, ``config/``, ``profiles/``, ``demo/session.zarr`` and the
workflow's ``results/demo/``, on a small simulated session):

- the ``bash`` and ``python`` blocks of README.md's "Using it" and "Real data" sections;
- every ``bash`` and ``python`` block of docs/usage.md.

The blocks of one document run as in one terminal: a ``source .venv/bin/activate`` of an
earlier block still holds in the later ones.

A shell command must exit 0 unless its trailing comment says ``exit N`` (the first number
given is the one expected here); a trailing comment starting with ``needs:`` (network, a
cluster) or ``long:`` (minutes) marks a command that is skipped, with the comment as the
reason, and the test lists what it skipped. The shell starts without the venv on PATH, so a
block that forgets to activate it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SKIP = re.compile(r"^(needs|long):")


@dataclass(frozen=True)
class Command:
    line: str
    expected: int | None  # None: skipped
    reason: str = ""


def section(text: str, title: str) -> str:
    """The text of the '## title' section (up to the next '## ')."""
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block with a language."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text) if m.group(1)]


def commands(body: str) -> list[Command]:
    """The commands of a shell block, with their expected exit codes."""
    out = []
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.search(r"\s#\s*(.*)$", line)
        comment = m.group(1) if m else ""
        if SKIP.match(comment):
            out.append(Command(line, None, comment))
            continue
        code = re.search(r"\bexit (\d+)", comment)
        out.append(Command(line, int(code.group(1)) if code else 0))
    return out


def shell_script(cmds: list[Command]) -> str:
    """One bash script: each command, then a check of its exit code."""
    lines = ["set -u"]
    for i, c in enumerate(cmds):
        if c.expected is None:
            continue
        lines += [c.line, f"rc=$?; if [ $rc -ne {c.expected} ]; then "
                  f"echo 'DOCS-CHECK command {i} exited '$rc', expected {c.expected}: '"
                  f"{_quote(c.line)} >&2; exit 97; fi"]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    venv_bin = str(VENV / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != Path(venv_bin).resolve())
    env["MPLBACKEND"] = "Agg"
    return env


def _run(cwd: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def after_make_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory as `make demo` leaves the checkout, with a small session (64 channels)."""
    root = tmp_path_factory.mktemp("docs")
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    shutil.copytree(REPO / "config", root / "config")
    (root / "profiles").symlink_to(REPO / "profiles", target_is_directory=True)
    (root / "tests" / "data").mkdir(parents=True)
    (root / "tests" / "data" / "gbt-argus").symlink_to(REPO / "tests" / "data" / "gbt-argus",
                                                       target_is_directory=True)
    calpipe = str(VENV / "bin" / "calpipe")
    # the two commands of `make demo`, on a small session
    for args in ([calpipe, "-q", "simulate", "demo/session.zarr", "--overwrite",
                  "--n-channels", "64", "--n-dumps", "4", "--n-receivers", "1",
                  "--n-arrays", "2"],
                 [calpipe, "run", "--cores", "2"]):
        proc = _run(root, args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _workdir(root: Path, name: str) -> Path:
    """A fresh directory per document, holding (links to) what the setup made."""
    work = root / name
    work.mkdir()
    for entry in (".venv", "config", "profiles", "tests", "demo", "results"):
        (work / entry).symlink_to(root / entry, target_is_directory=True)
    return work


def _run_blocks(root: Path, text: str, name: str) -> list[Command]:
    """Run the blocks of ``text`` in order in a fresh directory; returns the skipped commands.
    """
    root = _workdir(root, name)
    skipped: list[Command] = []
    n_run = 0
    activation: list[str] = []  # a reader's terminal stays activated from block to block
    for i, (lang, body) in enumerate(blocks(text)):
        if lang in ("bash", "sh", "shell"):
            cmds = commands(body)
            skipped += [c for c in cmds if c.expected is None]
            n_run += sum(c.expected is not None for c in cmds)
            script = root / f"_{name}_{i}.sh"
            script.write_text("\n".join(activation) + "\n" + shell_script(cmds))
            activation += [c.line for c in cmds
                           if c.expected is not None and c.line.startswith("source ")]
            proc = _run(root, ["bash", str(script)])
        elif lang == "python":
            n_run += 1
            script = root / f"_{name}_{i}.py"
            script.write_text(body)
            proc = _run(root, [sys.executable, str(script)])
        else:
            continue
        assert proc.returncode == 0, f"{name} block {i} ({lang}):\n{proc.stderr[-4000:]}"
    assert n_run > 0
    return skipped


def test_readme_using_it_runs_verbatim(after_make_demo: Path) -> None:
    text = (REPO / "README.md").read_text()
    part = section(text, "Using it") + section(text, "Real data: GBT Argus, checked against dysh")
    skipped = _run_blocks(after_make_demo, part, "readme")
    # what the commands wrote
    work = after_make_demo / "readme"
    assert 'class="quicklook"' in (work / "results/demo/l1_report.html").read_text()
    assert (work / "results/demo/l1.fits").is_file()
    assert (work / "my/l1.zarr/run_summary.json").is_file()
    assert (work / "argus_l1.zarr/run_summary.json").is_file()
    # only what is marked is skipped, and it says why
    assert [(c.line.split()[0], c.reason.split(":")[0]) for c in skipped] == [
        ("snakemake", "needs"), ("calpipe", "long")]


def test_usage_commands_run(after_make_demo: Path) -> None:
    skipped = _run_blocks(after_make_demo, (REPO / "docs/usage.md").read_text(), "usage")
    assert [c.line.split()[:2] for c in skipped] == [["make", "venv"]]
    assert (after_make_demo / "usage" / "argus_l1.zarr/run_summary.json").is_file()


def test_command_parser() -> None:
    cmds = commands("# a comment\ncalpipe x   # exit 2 (partial)\ncalpipe y  # needs: network\n"
                    "echo 'a # b' > f\n")
    assert cmds == [Command("calpipe x   # exit 2 (partial)", 2),
                    Command("calpipe y  # needs: network", None, "needs: network"),
                    Command("echo 'a # b' > f", 0)]
    script = shell_script([Command("false", 1), Command("true", 0)])
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0
    proc = subprocess.run(["bash", "-c", shell_script([Command("true", 2)])],
                          capture_output=True, text=True)
    assert proc.returncode == 97 and "expected 2" in proc.stderr
