"""Every code block of README.md and docs/*.md runs as written.

The ```python and ```bash blocks of one document run in order as one script (one namespace, so
later blocks use earlier names; ``__name__ == "__main__"``, so a block that starts worker
processes needs the guard a user's script needs) in a fresh temporary folder, with the repo's
richviz importable and ``.venv/bin`` (``richviz``) on PATH. A block that cannot run in a test
carries a visible marker on the line right before it::

    <!-- snippet: no-run (why not) -->

and every such marker states its reason. Other fences (json, yaml, plain ```) are not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
NO_RUN = re.compile(r"^\s*<!-- snippet: no-run \((?P<reason>[^)]*)\) -->\s*$")
ANY_SNIPPET_MARKER = re.compile(r"<!-- snippet:")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[A-Za-z0-9_+-]*)\s*$")
MAX_NO_RUN = 10  # keep the list of blocks that do not run short


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    source: str
    no_run: str | None  # the reason, when marked

    @property
    def label(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced code blocks of ``doc`` with their language and no-run marker."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^{re.escape(m['indent'])}```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        prev = lines[start - 1] if start else ""
        marker = NO_RUN.match(prev)
        source = textwrap.dedent("\n".join(body)) + "\n"
        found.append(
            Block(doc, start + 1, m["lang"].lower(), source, marker["reason"] if marker else None)
        )
        i += 1
    return found


def script(doc: Path) -> tuple[str, list[tuple[int, Block]]]:
    """One Python script running the runnable blocks of ``doc`` in order, and where each starts."""
    out = [
        "import subprocess as _subprocess  # doc snippet runner",
        "def _bash(_text):",
        "    _subprocess.run(['bash', '-euo', 'pipefail', '-c', _text], check=True)",
    ]
    starts = []
    for b in blocks(doc):
        if b.no_run is not None or b.lang not in RUN_LANGS:
            continue
        out.append(f"# ---- {b.label}")
        starts.append((len(out) + 1, b))
        if RUN_LANGS[b.lang] == "python":
            out.extend(b.source.splitlines())
        else:
            out.append(f"_bash({b.source!r})")
    return "\n".join(out) + "\n", starts


def test_every_no_run_marker_states_a_reason_and_precedes_a_block():
    count = 0
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for k, line in enumerate(lines):
            if not ANY_SNIPPET_MARKER.search(line):
                continue
            where = f"{doc.relative_to(ROOT)}:{k + 1}"
            m = NO_RUN.match(line)
            assert m, f"{where}: a snippet marker must read <!-- snippet: no-run (reason) -->"
            assert len(m["reason"].strip()) >= 10, f"{where}: state why the block cannot run"
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            assert FENCE.match(nxt), f"{where}: the marker must sit right before a code block"
            count += 1
    assert count <= MAX_NO_RUN, f"{count} blocks marked no-run: make some of them runnable"


def test_the_docs_have_code_to_run():
    runnable = [b for d in DOCS for b in blocks(d) if b.lang in RUN_LANGS and b.no_run is None]
    assert len(runnable) >= 8
    assert {RUN_LANGS[b.lang] for b in runnable} == {"python", "bash"}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_doc_snippets_run(doc, tmp_path):
    text, starts = script(doc)
    if not starts:
        return  # nothing runnable (checked: every code block is marked or not code)
    path = tmp_path / "snippets.py"
    path.write_text(text, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        OMP_NUM_THREADS="1",
        MPLBACKEND="Agg",
    )
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        lines = [
            int(n) for n in re.findall(rf'File "{re.escape(str(path))}", line (\d+)', proc.stderr)
        ]
        culprit = next((b.label for s, b in reversed(starts) if lines and s <= lines[-1]), "?")
        pytest.fail(
            f"{doc.name}: the block at {culprit} failed (exit {proc.returncode}):\n"
            + proc.stderr[-4000:],
            pytrace=False,
        )
