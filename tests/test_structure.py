"""The library's layering: no module imports from a layer above it, none imports a UI toolkit, and each imports
alone in a fresh interpreter (no hidden dependence on import order)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stroke_seg"

LAYERS = [
    {"types", "errors", "version", "io.limits", "io.digest", "pipeline.anatomy", "synthetic.dicom_export"}
    | {"serving.memory"},
    {"io.readers", "serving.auth", "serving.cache"}
    | {"synthetic.head", "synthetic.lesions", "synthetic.artefacts", "synthetic.signal", "synthetic.storage"}
    | {"synthetic.generator", "synthetic.raw_head"},
    {
        "io",
        "io.case",
        "io.dicom_headers",
        "io.dicom",
        "io.dicom_seg",
        "pipeline",
        "pipeline.preprocess",
        "pipeline.brain_extraction",
        "models.inference",
        "models.engines",
    },
    {"pipeline.components", "pipeline.rim", "pipeline.postprocess", "pipeline.restriction"},
    {"models.hdbet"}
    | {"models", "models.base", "models.adc_threshold", "models.unet", "models.ensemble", "models.deepisles"}
    | {"models.deepisles_case", "models.deepisles_weights", "models.segresnet"}
    | {"models.nnunet", "models.nnunet_folder"},
    {"report", "report.render", "report.describe", "report.page", "report.registration", "report.territories"}
    | {"pipeline.metrics", "pipeline.qc", "presentation"},
    {"api"},
    {"serving", "serving.batch", "serving.jobs", "serving.cluster", "serving.login", "synthetic.train"}
    | {"serving.provisional", "serving.warmup"},
    {"synthetic", "synthetic.__main__", "cli", "__main__", "__init__"},
]
"""Lowest first: types/errors and the input limits -> readers -> io/preprocess/engines -> postprocess -> models ->
metrics/QC/report -> api -> serving and training -> cli. A module may import from its own layer or below. The
sub-packages (io, pipeline, models, report, serving, synthetic) are the folders of this order; the few modules that
sit lower than their folder's place (anatomy, the input limits) are the shared facts everything reads."""

LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
    return ".".join(parts)


def _imports(path: Path, text: str | None = None) -> set[str]:
    """The stroke_seg modules ``path`` imports (relative or absolute), as dotted names under the package."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    if path.name == "__init__.py" and here == ["__init__"]:
        package = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "stroke_seg":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                candidate = ".".join(base + [alias.name])
                found.add(candidate if candidate in LEVEL else ".".join(base) or "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("stroke_seg.")}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert {_module_name(p) for p in MODULES} <= set(LEVEL), "add new modules to LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_no_upward_import(path):
    name = _module_name(path)
    upward = {m for m in _imports(path) if m != name and LEVEL.get(m, -1) > LEVEL[name]}
    if name in ("__init__", "models"):  # a package's __init__ may re-export what is below and beside it
        upward = {m for m in upward if not m.startswith("models.") and m != "api"}
    assert not upward, f"{name} (layer {LEVEL[name]}) imports from above: {sorted(upward)}"


def test_the_library_never_imports_a_ui_toolkit():
    for path in MODULES:
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n for n in names if n.split(".")[0] in ("gradio", "gradio_client")}, path.name


_FORK_IMPORTS = """
import importlib, os, sys, traceback
for lib in sys.argv[1].split(","):  # third-party libraries only: no stroke_seg module is loaded before the fork
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
assert not any(m == "stroke_seg" or m.startswith("stroke_seg.") for m in sys.modules)
failed, running = 0, 0
for name in sys.argv[2:]:
    if running == 2:  # two children at a time (two cores)
        failed += os.wait()[1] != 0
        running -= 1
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            sys.stderr.write(f"{name}: {traceback.format_exc()[-400:]}\\n")
            os._exit(1)
        os._exit(0)
    running += 1
for _ in range(running):
    failed += os.wait()[1] != 0
sys.exit(1 if failed else 0)
"""
PRELOADED = "numpy,scipy.ndimage,nibabel,torch,openvino,pydicom,PIL.Image,starlette.requests,dask.distributed"


@pytest.mark.slow  # a fresh interpreter per module: ~10 s (the import-graph rule above stays in the inner loop)
def test_each_module_imports_alone_in_a_fresh_interpreter():
    """Each module imports alone: one interpreter loads the third-party libraries once, then every stroke_seg
    module is imported in its own forked child (two at a time), which starts with no stroke_seg module loaded."""
    names = [f"stroke_seg.{_module_name(p)}" if _module_name(p) != "__init__" else "stroke_seg" for p in MODULES]
    names = [n for n in names if not n.endswith("__main__")]
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_IMPORTS, PRELOADED, *names], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 500
MAX_TOP_MODULES = 12


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    """Lines of code of a function: its body without the docstring, blank lines and comment lines."""
    body = node.body
    first = body[0]
    docstring = (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    )
    start = (body[1].lineno if len(body) > 1 else node.end_lineno + 1) if docstring else first.lineno
    return sum(1 for line in lines[start - 1 : node.end_lineno] if line.strip() and not line.strip().startswith("#"))


SOURCES = sorted(
    [*PACKAGE.rglob("*.py"), ROOT / "app.py", *(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")]
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_small_units(path):
    """No file over 500 lines, no function over 80 lines of code: split by what the code does."""
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_FILE_LINES, f"{path.name}: {len(lines)} lines (at most {MAX_FILE_LINES})"
    long = {
        f"{n.name} (line {n.lineno}): {c}"
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and (c := _code_lines(n, lines)) > MAX_FUNCTION_LINES
    }
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines of code: {sorted(long)}"


def test_the_tree_shows_the_layers():
    """At most 12 modules at the top of the package, the rest in its sub-packages; nothing but app.py at the top of
    the repository; every sub-package says in its docstring what lives there."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["app.py"]
    for folder in ("io", "pipeline", "models", "report", "serving", "synthetic"):
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and len(doc) > 200, f"stroke_seg/{folder}/__init__.py needs a docstring saying what lives there"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The import walk sees a lower module importing a higher one (the check can fail)."""
    probe = PACKAGE / "io" / "_probe_upward.py"
    fake = tmp_path / "probe.py"
    fake.write_text("from stroke_seg.serving.jobs import JobEngine\nfrom ..api import segment\n")
    LEVEL["io._probe_upward"] = LEVEL["io.case"]
    try:
        found = _imports(probe, fake.read_text())
        assert {"serving.jobs", "api"} <= found
        assert any(LEVEL.get(m, -1) > LEVEL["io._probe_upward"] for m in found)
    finally:
        del LEVEL["io._probe_upward"]
