"""The real MongoDB shell (npm package mongosh@2, on Node), installed once into a cache folder
outside the repository, and the README's mongosh block as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / \
    "execution-service-tests" / "mongosh"

INSTALL_SECONDS = 480


class MongoshUnavailable(Exception):
    """npm or the registry cannot be reached: the caller skips, saying so."""


def find_or_install_mongosh(cache: Path = CACHE) -> Path:
    shell = cache / "node_modules" / ".bin" / "mongosh"
    if shell.exists():
        return shell
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise MongoshUnavailable("node and npm are needed to install mongosh")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--fetch-retries=1",
                                 "--fetch-timeout=60000", "--prefix", str(cache), "mongosh@2"],
                                capture_output=True, text=True, timeout=INSTALL_SECONDS)
    except subprocess.TimeoutExpired:
        raise MongoshUnavailable(f"npm install mongosh@2 took over {INSTALL_SECONDS}s") from None
    if result.returncode != 0 or not shell.exists():
        raise MongoshUnavailable(f"npm install mongosh@2 failed: {result.stderr[-500:]}")
    return shell


def readme_mongosh_block(readme: Path = README) -> str:
    """The one ```javascript block under "## Auditing with mongosh", as written."""
    text = readme.read_text()
    section = text[text.index("## Auditing with mongosh"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```javascript\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the README's mongosh section must hold one javascript block"
    return blocks[0]


def paste(shell: Path, uri: str, script: str, timeout: float = 120) -> str:
    """What the shell prints when `script` is pasted into it (stdin, as an operator would)."""
    result = subprocess.run([str(shell), "--quiet", "--norc", uri], input=script,
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output
