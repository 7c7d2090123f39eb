"""``MODEL_ZOO.md`` and ``configs/`` agree (pure Python: no torch, no Detectron2).

The convention, stated at the top of MODEL_ZOO.md:

* every file under ``configs/`` has exactly one table row whose first cell is its path relative to
  ``configs/`` in backticks, e.g. ``| `mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml` |``;
* every other ``.yaml`` path in backticks names an existing file: a path whose first component is a
  folder of ``configs/`` is relative to ``configs/``, one starting with ``configs/`` is relative to
  the repository, and any other (the short ``toy/...`` names of the Mask2Former measurements) is
  relative to the folder named in the heading of its ``## `` section, e.g. ``configs/mask2former/``.

Backticked text with whitespace or a placeholder (``<``, ``*``, ``{``) is a command or a pattern,
not a path, and is not checked.
"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ZOO = REPO / "MODEL_ZOO.md"

CODE = re.compile(r"`([^`\n]+)`")
ROW_FIRST_CELL = re.compile(r"^\|\s*`([^`\n]+)`\s*\|")
SECTION = re.compile(r"^## .*?`configs/([^`/]+)/`")
NOT_A_PATH = re.compile(r"[\s<>*{}]")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Overrides conftest's autouse fixture of this name, which imports torch: nothing here needs it."""
    yield


def config_files():
    """Every file under configs/ (hidden files and caches aside), relative to configs/."""
    return sorted(
        p.relative_to(CONFIGS).as_posix()
        for p in CONFIGS.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(CONFIGS).parts)
    )


def zoo_lines():
    return ZOO.read_text(encoding="utf-8").splitlines()


def row_paths():
    """First-cell paths of the table rows, with their line numbers."""
    return [(i, m.group(1)) for i, line in enumerate(zoo_lines(), 1) if (m := ROW_FIRST_CELL.match(line))]


def yaml_references():
    """(line number, text, the file it names) for every backticked .yaml path of MODEL_ZOO.md."""
    top_dirs = {p.name for p in CONFIGS.iterdir() if p.is_dir()}
    section_dir = None
    refs = []
    for i, line in enumerate(zoo_lines(), 1):
        if line.startswith("## "):
            m = SECTION.match(line)
            section_dir = CONFIGS / m.group(1) if m else None
        for text in CODE.findall(line):
            if not text.endswith((".yaml", ".yml")) or NOT_A_PATH.search(text):
                continue
            first = text.split("/", 1)[0]
            if text.startswith("configs/"):
                target = REPO / text
            elif first in top_dirs:
                target = CONFIGS / text
            else:
                target = (section_dir or CONFIGS) / text
            refs.append((i, text, target))
    return refs


def test_there_are_configs_and_a_model_zoo():
    assert ZOO.is_file()
    assert config_files()
    assert "relative to `configs/`" in "\n".join(zoo_lines()[:20]), "the naming convention is stated at the top"


def test_every_config_file_is_listed_exactly_once():
    listed = [path for _, path in row_paths()]
    counts = {p: listed.count(p) for p in config_files()}
    missing = sorted(p for p, n in counts.items() if n == 0)
    repeated = sorted(p for p, n in counts.items() if n > 1)
    assert not missing, "files under configs/ without a row in MODEL_ZOO.md:\n" + "\n".join(missing)
    assert not repeated, "files under configs/ with more than one row in MODEL_ZOO.md:\n" + "\n".join(repeated)


def test_every_listed_row_is_a_config_file():
    files = set(config_files())
    top_dirs = {p.split("/", 1)[0] for p in files}
    stale = [
        f"line {i}: {path}"
        for i, path in row_paths()
        if path.split("/", 1)[0] in top_dirs and "/" in path and path not in files
    ]
    assert not stale, "MODEL_ZOO.md rows naming no file under configs/:\n" + "\n".join(stale)


def test_every_yaml_path_mentioned_exists():
    refs = yaml_references()
    assert refs
    missing = [f"line {i}: {text} -> {target.relative_to(REPO)}" for i, text, target in refs if not target.is_file()]
    assert not missing, "MODEL_ZOO.md names config files that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("text, ok", [
    ("`mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml`", True),
    ("`python train_net.py --config-file configs/mask2former/toy/x_<task>.yaml`", False),
    ("`toy_{train,val}`", False),
])
def test_reference_pattern(text, ok):
    found = [t for t in CODE.findall(text) if t.endswith(".yaml") and not NOT_A_PATH.search(t)]
    assert bool(found) == ok
