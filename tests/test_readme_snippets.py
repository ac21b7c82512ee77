"""The documentation runs as written: the README's and an exported model card's code blocks.

Every ```python block of ``README.md`` and of the model card ``pixelprune export`` writes (exported
here from a tiny checkpoint through the exporter API) runs in a fresh interpreter, offline, with
only these substitutions:

* a Hub model id (a string constant like ``"Qwen/Qwen3-VL-2B-Instruct"``) becomes a tiny local
  checkpoint of the family its name says (Qwen3-VL / Qwen3.5, MoE if it names an ``A3B``-style
  active size or ``MoE``); an id naming ``PixelPrune`` becomes a tiny *exported* repo of that
  family; the card's own repo id becomes the card's exported folder;
* an ``http(s)://`` image URL becomes a local sample image.

The card's snippets run with ``pixelprune`` made unimportable: the card says the repo loads with
transformers alone. Snippets that import vLLM run only where vLLM is installed (the ``vllm``
environment of ``scripts/test.sh``).

Shell commands are checked where that is cheap: a ```bash block holding one ``pixelprune`` or
``python -m pixelprune`` command and followed directly by an untagged ``` block (its printed
output) is run, and its output must equal the block, except for times (``6.3 ms``); every
documented ``... --help`` line must exit 0 with a usage text. Every ``pixelprune[extras]`` /
``.[extras]`` the docs install must exist in ``pyproject.toml``.

A block that cannot run here is marked, right before its opening fence, with

    <!-- snippet: skip (the reason, e.g. needs a GPU) -->

Use it sparingly: prefer making the snippet self-contained. Skipped blocks are reported as pytest
skips with their file, line and reason (``-ra`` lists them in the summary).
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

SKIP_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*skip\s*\((?P<reason>.+)\)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w-]*/[\w.-]*[A-Za-z0-9]$")
FILE_SUFFIXES = {".png", ".jpg", ".jpeg", ".json", ".md", ".py", ".txt", ".safetensors", ".jinja"}
IMAGE_URL = re.compile(r"^https?://\S+\.(png|jpe?g|webp|gif)$", re.IGNORECASE)
TIMING = re.compile(r"\d+(\.\d+)?(?= ?(ms|us|s)\b)")
SNIPPET_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    doc: str  # file name, for test ids and messages
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason given by a skip marker right before the fence
    output: Block | None = None  # an untagged block that directly follows (printed output)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def markdown_blocks(text: str, doc: str) -> list[Block]:
    """The fenced blocks of ``text`` in order; an untagged block right after another is its output."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    last_end = -10  # line index of the previous block's closing fence
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match["indent"], match["lang"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP_MARKER.match(prev)
        block = Block(doc, start + 1, lang, "\n".join(body) + "\n", marker["reason"] if marker else None)
        only_blank_between = all(not lines[j].strip() for j in range(last_end + 1, start))
        if lang in ("", "text") and blocks and only_blank_between and blocks[-1].lang in ("bash", "console", "shell"):
            blocks[-1] = replace(blocks[-1], output=block)
        else:
            blocks.append(block)
        last_end = i
        i += 1
    return blocks


# --- where the Hub ids go ----------------------------------------------------------------------


def family_of(repo_id: str) -> str:
    """The tiny-model family a Hub id names (``Qwen/Qwen3.5-35B-A3B`` -> ``qwen3_5_moe``)."""
    name = repo_id.split("/", 1)[1].lower()
    if "qwen3.5" in name or "qwen3_5" in name:
        family = "qwen3_5"
    elif "qwen3-vl" in name or "qwen3_vl" in name:
        family = "qwen3_vl"
    else:
        raise AssertionError(f"{repo_id!r}: no tiny model for it (name a Qwen3-VL or Qwen3.5 checkpoint)")
    is_moe = "moe" in name or re.search(r"-a\d+(\.\d+)?b\b", name) is not None
    return family + ("_moe" if is_moe else "")


def hub_ids(code: str) -> set[str]:
    """The string constants of ``code`` that are Hub model ids (not local files)."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and HUB_ID.match(node.value):
            if Path(node.value).suffix.lower() in FILE_SUFFIXES or (REPO / node.value).exists():
                continue
            found.add(node.value)
    return found


def image_urls(code: str) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and IMAGE_URL.match(node.value)
    }


def substitute(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        for quote in ('"', "'"):
            code = code.replace(f"{quote}{old}{quote}", repr(new))
    return code


class LocalRepos:
    """Tiny stock checkpoints and tiny exports, built on first use."""

    def __init__(self, tiny_checkpoint, root: Path):
        self._stock = tiny_checkpoint
        self._root = root
        self._exports: dict[str, Path] = {}
        self.fixed: dict[str, Path] = {}  # explicit id -> folder (the card's own repo id)

    def stock(self, family: str) -> Path:
        return self._stock(family)

    def exported(self, family: str) -> Path:
        if family not in self._exports:
            from pixelprune.hub_configs.exporter import export

            out = self._root / f"{family}-PixelPrune"
            export(self.stock(family), out, sample_images=[REPO / "assets" / "sample_screenshot.png"])
            self._exports[family] = out
        return self._exports[family]

    def resolve(self, repo_id: str) -> Path:
        if repo_id in self.fixed:
            return self.fixed[repo_id]
        family = family_of(repo_id)
        return self.exported(family) if "pixelprune" in repo_id.lower() else self.stock(family)


@pytest.fixture(scope="module")
def local_repos(tiny_checkpoint, tmp_path_factory) -> LocalRepos:
    return LocalRepos(tiny_checkpoint, tmp_path_factory.mktemp("snippet_repos"))


# --- running snippets ---------------------------------------------------------------------------

RUNNER = textwrap.dedent(
    """
    import importlib.abc, runpy, sys

    if sys.argv[2] == "block-pixelprune":
        BLOCKED = {"pixelprune", "core", "processing", "modeling", "hub_configs", "vllm_model"}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked: the model card says transformers alone is enough")

        sys.meta_path.insert(0, Block())
    runpy.run_path(sys.argv[1], run_name="__main__")
    """
)


def workdir(tmp_path: Path) -> Path:
    """A scratch folder that looks like the clone's root (``assets/``), so relative paths work and
    nothing a snippet writes lands in the checkout."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "assets").symlink_to(REPO / "assets", target_is_directory=True)
    return work


def snippet_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXELPRUNE_", "PYTHONPATH"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_python(block: Block, code: str, tmp_path: Path, *, block_pixelprune: bool) -> None:
    work = workdir(tmp_path)
    (tmp_path / "snippet.py").write_text(code)
    (tmp_path / "runner.py").write_text(RUNNER)
    mode = "block-pixelprune" if block_pixelprune else "plain"
    proc = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "runner.py"), str(tmp_path / "snippet.py"), mode],
        cwd=work, env=snippet_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=SNIPPET_TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"{block.where}: the snippet failed (exit {proc.returncode}); as run:\n{code}\n"
        f"--- stderr (end) ---\n{proc.stderr[-3000:]}"
    )


def prepare(block: Block, local_repos: LocalRepos) -> str:
    code = block.code
    if block.skip:
        pytest.skip(f"{block.where}: {block.skip}")
    if uses_vllm(block):
        pytest.importorskip("vllm", reason=f"{block.where} uses vLLM: runs in the vllm environment")
    if uses_video(block):
        pytest.importorskip("torchvision", reason=f"{block.where} has a video: the stock video processor needs torchvision")
    replacements = {repo_id: str(local_repos.resolve(repo_id)) for repo_id in sorted(hub_ids(code))}
    sample = REPO / "assets" / "sample_screenshot.png"
    replacements.update({url: str(sample) for url in image_urls(code)})
    return substitute(code, replacements)


def python_blocks(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.lang == "python"]


def uses_vllm(block: Block) -> bool:
    return re.search(r"^\s*(import vllm|from vllm\b)", block.code, re.MULTILINE) is not None


def uses_video(block: Block) -> bool:
    return re.search(r"""["']type["']:\s*["']video["']""", block.code) is not None


README_BLOCKS = markdown_blocks(README.read_text(), "README.md")


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, marks=[pytest.mark.vllm] if uses_vllm(b) else [], id=b.where) for b in python_blocks(README_BLOCKS)],
)
def test_readme_python_snippet(block: Block, local_repos: LocalRepos, tmp_path: Path):
    run_python(block, prepare(block, local_repos), tmp_path, block_pixelprune=False)


# --- the exported model card ---------------------------------------------------------------------

CARD_REPO_ID = "pixelprune-test/Qwen3-VL-Tiny-PixelPrune"


@pytest.fixture(scope="module")
def card_blocks(local_repos: LocalRepos, tmp_path_factory) -> list[Block]:
    """The code blocks of the card that ``export`` writes for a tiny Qwen3-VL checkpoint.

    The card's repo id is passed when the exporter takes one (``repo_id``); it then names this
    export folder. Without one the card names the folder itself."""
    from pixelprune.hub_configs.exporter import export

    out = tmp_path_factory.mktemp("card") / "Qwen3-VL-Tiny-PixelPrune"
    kwargs = {"repo_id": CARD_REPO_ID} if "repo_id" in inspect.signature(export).parameters else {}
    export(local_repos.stock("qwen3_vl"), out, sample_images=[REPO / "assets" / "sample_screenshot.png"], **kwargs)
    local_repos.fixed[CARD_REPO_ID] = out
    return markdown_blocks((out / "README.md").read_text(), "model card")


def test_model_card_has_python_snippets(card_blocks):
    assert python_blocks(card_blocks), "the exported model card shows no Python usage"


def test_model_card_python_snippets(card_blocks: list[Block], local_repos: LocalRepos, tmp_path: Path):
    # One test for all of them: the card is generated, so its blocks are known only at run time.
    ran = skipped = 0
    for i, block in enumerate(python_blocks(card_blocks)):
        if block.skip:
            skipped += 1
            continue
        if uses_vllm(block):
            try:
                import vllm  # noqa: F401
            except ImportError:
                skipped += 1
                continue
        work = tmp_path / f"block{i}"
        work.mkdir()
        run_python(block, prepare(block, local_repos), work, block_pixelprune=True)
        ran += 1
    assert ran, f"no card snippet could run here ({skipped} skipped)"


# --- shell commands -------------------------------------------------------------------------------


def command_argv(command: str) -> list[str]:
    """The argv of a documented ``pixelprune ...`` / ``python -m pixelprune ...`` command here."""
    argv = shlex.split(command, comments=True)
    if argv[0] == "pixelprune":
        script = Path(sys.executable).with_name("pixelprune")
        assert script.exists(), f"the `pixelprune` console script is not installed next to {sys.executable}"
        return [str(script), *argv[1:]]
    if argv[:3] == ["python", "-m", "pixelprune"]:
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"not a pixelprune command: {command!r}")


def is_pixelprune_command(line: str) -> bool:
    return line.startswith(("pixelprune ", "python -m pixelprune "))


def without_times(text: str) -> str:
    """Times vary between runs: every number followed by a time unit becomes ``<t>``."""
    return "\n".join(TIMING.sub("<t>", line.rstrip()) for line in text.strip("\n").splitlines())


OUTPUT_BLOCKS = [b for b in README_BLOCKS if b.output is not None]
HELP_LINES = [
    (block, line.strip())
    for block in README_BLOCKS
    if block.lang in ("bash", "console", "shell")
    for line in block.code.splitlines()
    if is_pixelprune_command(line.strip()) and "--help" in shlex.split(line, comments=True)
]


def run_command(block: Block, command: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command_argv(command), cwd=workdir(tmp_path), env=snippet_env(tmp_path), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S,
    )


def skip_without_video_support(block: Block, command: str) -> None:
    """A documented ``inspect`` of a video file needs the ``video`` extra and torchvision (hf-hi has
    them, hf-lo has no torchvision): skip there, naming what is missing."""
    from pixelprune.video_files import VideoError, _check_support, is_video_file

    if any(is_video_file(Path(arg)) for arg in shlex.split(command, comments=True)[1:]):
        try:
            _check_support()
        except VideoError as exc:
            pytest.skip(f"{block.where} inspects a video: {exc}")


@pytest.mark.parametrize("block", OUTPUT_BLOCKS, ids=lambda b: b.where)
def test_readme_command_prints_what_the_readme_shows(block: Block, tmp_path: Path):
    if block.skip:
        pytest.skip(f"{block.where}: {block.skip}")
    commands = [line for line in block.code.splitlines() if line.strip()]
    assert len(commands) == 1 and is_pixelprune_command(commands[0]), (
        f"{block.where}: a command block followed by its output must hold one pixelprune command"
    )
    skip_without_video_support(block, commands[0])
    proc = run_command(block, commands[0], tmp_path)
    assert proc.returncode == 0, f"{block.where}: {commands[0]!r} failed:\n{proc.stderr[-3000:]}"
    assert without_times(proc.stdout) == without_times(block.output.code), (
        f"{block.where}: `{commands[0]}` prints something else than the README shows at line "
        f"{block.output.line}; update the README with this output:\n{proc.stdout}"
    )


@pytest.mark.parametrize("block,command", HELP_LINES, ids=lambda x: x.where if isinstance(x, Block) else x)
def test_readme_help_commands_run(block: Block, command: str, tmp_path: Path):
    proc = run_command(block, command, tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), (
        f"{block.where}: {command!r} exits {proc.returncode}:\n{proc.stderr[-2000:]}"
    )


def test_readme_documents_commands_to_check():
    # The checks above must not silently become empty when the README is rewritten.
    assert OUTPUT_BLOCKS and HELP_LINES and python_blocks(README_BLOCKS)


# --- install lines ----------------------------------------------------------------------------------

# `pixelprune[a,b]`, `".[a,b]"` (a clone) and `...pixelprune-0.1.0-py3-none-any.whl[a,b]` (a wheel)
EXTRAS = re.compile(r"""(?:pixelprune|(?<![\w/])\.|\.whl)\[(?P<extras>[\w,\s-]+)\]""")


def documented_extras(text: str) -> set[str]:
    return {e.strip() for m in EXTRAS.finditer(text) for e in m["extras"].split(",") if e.strip()}


def test_documented_extras_exist(card_blocks):
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    card = "\n".join(b.code for b in card_blocks)
    for doc, text in (("README.md", README.read_text()), ("model card", card)):
        extras = documented_extras(text)
        assert extras or doc != "README.md", "the README names no pixelprune extras"  # the pattern still matches
        assert extras <= declared, f"{doc} installs extras pyproject.toml does not declare: {sorted(extras - declared)}"


def imported_distributions(code: str) -> set[str]:
    """The distributions a snippet needs: what it imports, and accelerate for ``device_map=``."""
    from importlib.metadata import packages_distributions

    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    dists = {"pixelprune" if m == "pixelprune" else packages_distributions().get(m, [m])[0] for m in modules}
    if "device_map" in code:
        dists.add("accelerate")  # transformers raises without it
    return {canonical(d) for d in dists}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_transformers_extra_installs_what_the_snippets_use(card_blocks):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = lambda requirement: canonical(re.match(r"[A-Za-z0-9_.-]+", requirement)[0])  # noqa: E731
    installed = {"pixelprune"} | {name(r) for r in project["dependencies"]}
    installed |= {name(r) for r in project["optional-dependencies"]["transformers"]}
    for block in python_blocks(README_BLOCKS) + python_blocks(card_blocks):
        if block.skip or uses_vllm(block):
            continue
        missing = imported_distributions(block.code) - installed
        assert not missing, f"{block.where} needs {sorted(missing)}, which `pip install -e \".[transformers]\"` does not install"


# --- the table of contents ------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_contents_lists_every_section():
    text = README.read_text()
    outside_fences = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    sections = [h for h in re.findall(r"^## (.+)$", outside_fences, re.MULTILINE) if h not in ("Contents", "License")]
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"^- \[[^\]]+\]\(#([^)]+)\)", contents, re.MULTILINE)
    assert links == [github_anchor(h) for h in sections], (
        "README's Contents must link every `## ` section in order (anchors as GitHub makes them)"
    )
