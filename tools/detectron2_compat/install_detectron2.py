#!/usr/bin/env python
"""Install Detectron2 v0.6 on today's PyTorch / NumPy / Pillow / setuptools, without a C++ build.

Official Detectron2 is not published on the package registry. The registry has ``pb1-detectron2==0.6``,
a source distribution of Detectron2 v0.6 whose C++ sources are missing. This script

1. leaves an official Detectron2 alone when one with compiled ops already imports;
2. fetches that source distribution from the package index (cached, pinned by sha256);
3. fixes the incompatibilities of v0.6 with current libraries (see ``PATCHES``);
4. installs ``detectron2._C`` as the pure-PyTorch module ``_C.py`` that sits next to this script;
5. builds and installs the result with pip, with a setup.py of ours (no extension, no ``black`` pin,
   the model-zoo configs packaged, ``detectron2.projects.point_rend`` and friends included).

It is idempotent: when the installed copy carries the fingerprint of this script, ``_C.py`` and the
archive, it does nothing. Run it with the Python of the environment to install into.
"""
import argparse
import hashlib
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ARCHIVE_NAME = "pb1-detectron2-0.6.tar.gz"
ARCHIVE_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PROJECT_NAME = "pb1-detectron2"
DEFAULT_INDEX = "https://pypi.org/simple"
HERE = Path(__file__).resolve().parent
C_MODULE = HERE / "_C.py"
FINGERPRINT_FILE = "_compat_fingerprint.json"

# (file relative to the source root, regular expression, replacement). Every pattern must match at
# least once in a fresh archive; the script stops with the file's name otherwise.
PATCHES = [
    # NumPy 1.24 removed the aliases np.bool / np.int / np.float: use the builtins they stood for.
    *[
        (f, r"\bnp\.(bool|int|float)\b(?!_)", r"\1")
        for f in [
            "detectron2/evaluation/pascal_voc_evaluation.py",
            "detectron2/evaluation/sem_seg_evaluation.py",
            "detectron2/structures/masks.py",
            "detectron2/data/build.py",
            "detectron2/utils/visualizer.py",
            "detectron2/utils/video_visualizer.py",
        ]
    ],
    # Pillow 10 removed Image.LINEAR, an alias of Image.BILINEAR.
    ("detectron2/data/transforms/transform.py", r"\bImage\.LINEAR\b", "Image.BILINEAR"),
    # setuptools 81 removed pkg_resources: resolve model-zoo configs relative to the module.
    ("detectron2/model_zoo/model_zoo.py", r"^import pkg_resources\n", ""),
    (
        "detectron2/model_zoo/model_zoo.py",
        r"pkg_resources\.resource_filename\(\s*\"detectron2\.model_zoo\",\s*"
        r"os\.path\.join\(\"configs\", config_path\)\s*\)",
        'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
    ),
    # Without the compiled COCOeval_opt, fall back to pycocotools and say so once.
    (
        "detectron2/evaluation/coco_evaluation.py",
        r"(\n(\s+)self\._use_fast_impl = use_fast_impl\n)",
        r"\1\2if use_fast_impl and not hasattr(_C, 'COCOevalEvaluateImages'):\n"
        r"\2    from detectron2.utils.logger import log_first_n\n"
        r"\2    log_first_n(logging.INFO, 'detectron2._C has no fast COCOeval: '\n"
        r"\2                'evaluating with pycocotools (use_fast_impl=False).', n=1)\n"
        r"\2    self._use_fast_impl = False\n",
    ),
    # PyTorch 2 no longer ships caffe2: keep TracingAdapter and TorchScript export importable, and
    # make the caffe2 export API fail only when it is used, saying why.
    (
        "detectron2/export/__init__.py",
        r"^from \.api import \*\n",
        "try:\n"
        "    from .api import *\n"
        "except ImportError as _e:  # caffe2 is not part of PyTorch 2\n"
        "    _CAFFE2_IMPORT_ERROR = _e\n"
        "    _CAFFE2_API = ('add_export_config', 'export_caffe2_model', 'Caffe2Model',\n"
        "                   'export_onnx_model', 'Caffe2Tracer')\n"
        "\n"
        "    def __getattr__(name):\n"
        "        if name not in _CAFFE2_API:\n"
        "            raise AttributeError(name)\n"
        "        raise ImportError(\n"
        "            f'detectron2.export.{name} needs caffe2, which PyTorch 2 does not ship; '\n"
        "            'use TracingAdapter or torch.onnx / torch.export instead'\n"
        "        ) from _CAFFE2_IMPORT_ERROR\n",
    ),
    (
        "detectron2/evaluation/coco_evaluation.py",
        r"\nimport detectron2\.utils\.comm as comm\n",
        "\nimport detectron2.utils.comm as comm\nfrom detectron2 import _C\n",
    ),
]

SETUP_PY = '''\
# Written by the project's tools/detectron2_compat/install_detectron2.py: Detectron2 v0.6 without a
# C++ extension (detectron2/_C.py is a pure-PyTorch module), configs packaged, no black pin.
from pathlib import Path
from setuptools import find_packages, setup

PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
zoo = Path("detectron2/model_zoo")
configs = [str(p.relative_to(zoo)) for p in zoo.glob("configs/**/*") if p.suffix in (".yaml", ".py")]

setup(
    name="detectron2",
    version="0.6",
    url="https://github.com/facebookresearch/detectron2",
    description="Detectron2 v0.6 (pure-PyTorch ops build)",
    packages=find_packages(exclude=("configs", "tests*", "projects*", "tools*")) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2": ["_compat_fingerprint.json"], "detectron2.model_zoo": configs},
    python_requires=">=3.8",
    install_requires=[
        "Pillow>=7.1", "matplotlib", "pycocotools>=2.0.2", "termcolor>=1.1", "yacs>=0.1.8",
        "tabulate", "cloudpickle", "tqdm>4.29.0", "tensorboard", "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.11", "omegaconf>=2.1", "hydra-core>=1.1",
    ],
)
'''


def log(msg: str) -> None:
    print(f"[detectron2-compat] {msg}", flush=True)


def fingerprint() -> str:
    h = hashlib.sha256()
    h.update(ARCHIVE_SHA256.encode())
    h.update(Path(__file__).read_bytes())
    h.update(C_MODULE.read_bytes())
    return h.hexdigest()


def installed_state() -> str:
    """'official', 'current', 'stale' or 'absent', judged in a fresh interpreter."""
    probe = (
        "import json, pathlib, detectron2, detectron2._C as C\n"
        f"p = pathlib.Path(detectron2.__file__).parent / {FINGERPRINT_FILE!r}\n"
        "print(json.dumps({'so': not C.__file__.endswith('.py'),"
        " 'fp': json.loads(p.read_text())['fingerprint'] if p.exists() else None}))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "absent"
    state = json.loads(r.stdout.strip().splitlines()[-1])
    if state["so"]:
        return "official"
    return "current" if state["fp"] == fingerprint() else "stale"


def index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True, text=True,
        )
        url = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else DEFAULT_INDEX
    return url.rstrip("/")


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href"]


def fetch_archive(cache_dir: Path) -> Path:
    """Returns the sdist from the cache, or downloads it from the index's project page (PEP 503)."""
    target = cache_dir / ARCHIVE_NAME
    if target.exists() and sha256_of(target) == ARCHIVE_SHA256:
        log(f"using cached {target}")
        return target
    page = f"{index_url()}/{PROJECT_NAME}/"
    log(f"looking up {ARCHIVE_NAME} on {page}")
    with urllib.request.urlopen(page, timeout=120) as r:
        parser = _Links()
        parser.feed(r.read().decode("utf-8", "replace"))
    hrefs = [h for h in parser.hrefs if urllib.parse.urlsplit(h).path.endswith("/" + ARCHIVE_NAME)]
    if not hrefs:
        raise RuntimeError(f"{ARCHIVE_NAME} is not listed on {page}")
    url = urllib.parse.urljoin(page, hrefs[0].split("#")[0])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    log(f"downloading {url}")
    with urllib.request.urlopen(url, timeout=300) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    got = sha256_of(tmp)
    if got != ARCHIVE_SHA256:
        tmp.unlink()
        raise RuntimeError(f"sha256 mismatch for {url}: got {got}, expected {ARCHIVE_SHA256}")
    tmp.replace(target)
    return target


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def patch_tree(root: Path) -> None:
    for rel, pattern, repl in PATCHES:
        path = root / rel
        text = path.read_text()
        new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        if n == 0:
            raise RuntimeError(f"patch pattern {pattern!r} not found in {rel}")
        path.write_text(new)
        log(f"patched {rel} ({n} site{'s' if n > 1 else ''})")
    (root / "setup.py").write_text(SETUP_PY)
    shutil.copy(C_MODULE, root / "detectron2" / "_C.py")
    (root / "detectron2" / FINGERPRINT_FILE).write_text(
        json.dumps({"fingerprint": fingerprint(), "archive_sha256": ARCHIVE_SHA256})
    )
    # The sdist's setup.cfg and egg-info describe the original package; ours replaces them.
    for stale in ["setup.cfg", "pb1_detectron2.egg-info"]:
        p = root / stale
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="reinstall even if up to date")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segzoo",
        help="where the downloaded archive is kept",
    )
    args = ap.parse_args()

    state = installed_state()
    if state == "official" and not args.force:
        log("an official detectron2 with compiled ops is installed: leaving it")
        return 0
    if state == "current" and not args.force:
        log("detectron2 (compat build) is up to date")
        return 0

    archive = fetch_archive(args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="d2compat-") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp) / ARCHIVE_NAME[: -len(".tar.gz")]
        patch_tree(root)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", str(root)]
        log("building: " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    if installed_state() != "current":
        raise RuntimeError("detectron2 was installed but does not import with the compat _C module")
    log("detectron2 installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
