"""The docs cannot rot silently.

- Every reference "`path`, `function`" in docs/*.md names a function defined in that file, and when
  it quotes a line of code ("`path`, `function`: `code`"), that line is in the function's source
  (whitespace normalised).
- Every backward in ``tinyops.__all__`` has its derivation in docs/derivations.md.
- Every public function of tinyops has a docstring that gives the shapes (or points, with
  ``:func:`name```, to the function that does); every forward's says what it raises and every
  backward's has its derivation.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest

import tinyops

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
DERIVATIONS = ROOT / "docs" / "derivations.md"

# "`tinyops/ops/tanh.py`, `tanh_backward`" optionally followed by ": `dx = (1 - out**2) * dout`"
# (a list of files, "`a.py`, `b.py`", is not a reference)
REF = re.compile(r"`(?P<path>[\w./-]+\.py)`, `(?P<name>[A-Za-z_][\w.]*)(?<!\.py)`(?::\s*`(?P<code>[^`]+)`)?")


class Ref(NamedTuple):
    doc: str
    line: int
    path: str
    name: str
    code: str | None

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.path}`, `{self.name}`" + (f": `{self.code}`" if self.code else "")


def find_refs() -> list[Ref]:
    refs = []
    for doc in DOCS:
        for lineno, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            for m in REF.finditer(line):
                refs.append(Ref(doc.name, lineno, m["path"], m["name"], m["code"]))
    return refs


REFS = find_refs()


def normalise(code: str) -> str:
    """Collapse every run of whitespace to one space (so line breaks and indentation do not matter)."""
    return " ".join(code.split())


def load(path: str) -> ModuleType:
    """Import the module of a repository file: ``tinyops/ops/tanh.py`` -> ``tinyops.ops.tanh``; any other
    file (an example) is loaded from its path."""
    if path.startswith("tinyops/"):
        return importlib.import_module(path.removesuffix(".py").replace("/", "."))
    name = "_docs_" + re.sub(r"\W", "_", path.removesuffix(".py"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def resolve(module: ModuleType, name: str) -> Any:
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def test_docs_have_references() -> None:
    assert DERIVATIONS.exists()
    assert len([r for r in REFS if r.doc == DERIVATIONS.name and r.code]) >= 20


@pytest.mark.parametrize("ref", REFS, ids=str)
def test_reference_exists_and_quotes_the_code(ref: Ref) -> None:
    path = ROOT / ref.path
    assert path.is_file(), f"{ref}: no file {ref.path}"
    module = load(ref.path)
    try:
        obj = resolve(module, ref.name)
    except AttributeError:
        pytest.fail(f"{ref}: {ref.path} has no {ref.name}")
    obj = getattr(obj, "py_func", obj)  # a compiled kernel: the Python function it was compiled from
    assert inspect.isfunction(obj) or inspect.isclass(obj), f"{ref}: {ref.name} is not a function or class"
    source_file = Path(inspect.getsourcefile(obj) or "").resolve()
    assert source_file == path.resolve(), f"{ref}: {ref.name} is defined in {source_file}, not in {ref.path}"
    if ref.code is not None:
        source = normalise(inspect.getsource(obj))
        assert normalise(ref.code) in source, f"{ref}: the quoted line is not in {ref.name}'s source"


def test_every_backward_has_its_derivation() -> None:
    referenced = {r.name.split(".")[-1] for r in REFS if r.doc == DERIVATIONS.name}
    backwards = sorted(n for n in tinyops.__all__ if n.endswith("_backward"))
    # an alias (softmax_naive_backward = softmax_backward) is covered by the function it names
    missing = [n for n in backwards if getattr(tinyops, n).__name__ not in referenced]
    assert not missing, f"docs/derivations.md has no derivation naming {missing}"


# ----------------------------------------------------------------------------- links

LINK = re.compile(r"\]\((?P<target>[^)\s]*?)(?:#(?P<anchor>[^)\s]+))?\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", md.read_text(encoding="utf-8"), re.M)}


MARKDOWN = [p for p in [ROOT / "README.md", *DOCS] if p.exists()]


@pytest.mark.parametrize("md", MARKDOWN, ids=lambda p: p.name)
def test_links_to_files_and_headings_resolve(md: Path) -> None:
    """Relative links point at existing files, and #anchors at existing headings (GitHub's slugs)."""
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code: x[i](j) is not a link
    for m in LINK.finditer(text):
        target, anchor = m["target"], m["anchor"]
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path = (md.parent / target).resolve() if target else md
        assert path.exists(), f"{md.name}: link to {target!r}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{md.name}: link to {target}#{anchor}: no such heading in {path.name}"


# ----------------------------------------------------------------------------- docstrings

# a shape written out: "(N, C)", "(..., D)", "(V,)", "0-D", "x's shape", "any shape"
SHAPE = re.compile(r"\((?:\.\.\.|[A-Z]\w*)(?:\s*[,x]\s*(?:\.\.\.|[A-Z0-9]\w*))*,?\)|\b0-D\b|\bshape\b")
SEE = re.compile(r":func:`~?(?:tinyops\.)?(?:[\w.]+\.)?(\w+)`")

PUBLIC_FUNCTIONS = sorted(n for n in tinyops.__all__ if inspect.isfunction(getattr(tinyops, n)))

# Docstrings known to miss a part, each with what it misses. strict: the test fails once the docstring is
# fixed, so that the entry is removed here.
KNOWN_GAPS: dict[str, str] = {}


def _param(name: str) -> Any:
    if name in KNOWN_GAPS:
        return pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=True, raises=AssertionError))
    return name


def doc_with_pointers(name: str, seen: frozenset[str] = frozenset()) -> str:
    """The docstring of ``name`` followed by the docstrings it points to with :func:`...` (transitively)."""
    doc = inspect.getdoc(getattr(tinyops, name)) or ""
    parts = [doc]
    for target in SEE.findall(doc):
        if target not in seen and target != name and hasattr(tinyops, target):
            parts.append(doc_with_pointers(target, seen | {name}))
    return "\n".join(parts)


def takes_arrays(name: str) -> bool:
    """Whether any parameter of ``tinyops.<name>`` is annotated as an array (or a sequence of them)."""
    params = inspect.signature(getattr(tinyops, name)).parameters.values()
    return any(re.search(r"Array|Sequence", str(p.annotation)) for p in params)


@pytest.mark.parametrize("name", [_param(n) for n in PUBLIC_FUNCTIONS])
def test_public_function_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(tinyops, name))
    assert doc, f"tinyops.{name} has no docstring"
    full = doc_with_pointers(name)
    if takes_arrays(name):
        assert SHAPE.search(full), f"tinyops.{name}'s docstring gives no shapes"
        assert re.search(r"dtype|float", full), f"tinyops.{name}'s docstring gives no dtypes"
    if name.endswith("_forward"):
        assert "Raises" in full, f"tinyops.{name}'s docstring does not say what it raises"
    if name.endswith("_backward"):
        assert "Derivation" in full, f"tinyops.{name}'s docstring has no derivation"
