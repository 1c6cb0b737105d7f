"""The dataset folders are deliberate copies (README, Layout): each holds its own config,
model, prior, loss, log and train files, so one dataset's method can change without touching
the others. What is meant to stay the same must stay the same: every top-level function, class
and constant of those files is compared across the folders that define it, and a difference
fails with a diff unless DIVERGENCES lists it with its reason. A listed entry that no longer
differs fails too, so the list stays the list of the research variants.

Docstrings and comments are not compared (each folder explains its own choices)."""

import ast
import difflib

import pytest

from tests.scripts import FOLDERS, REPO

MODULES = ("config", "model", "prior", "loss", "log", "train")
FILES = ("config.py", "dataset.py", "model.py", "prior.py", "loss.py", "log.py", "train.py")

# (folder, "module.name"): why that folder's copy differs from the others'.
DIVERGENCES = {
    ("dsprites", "config.validate_data"): "dSprites' factor grid; no mirroring while posX is an "
                                          "entity factor",
    ("shapes3d", "config.validate_data"): "Shapes3D's factor grid",
    ("mpi3d", "config.validate_data"): "the file variant sets MPI3D's factor grid",
    ("dsprites", "model.IMAGE_CHANNELS"): "binary pictures: one channel",
    ("dsprites", "log.BIN_NAMES"): "names of dSprites' bins",
    ("shapes3d", "log.BIN_NAMES"): "names of Shapes3D's bins",
    ("mpi3d", "log.BIN_NAMES"): "names of MPI3D's bins",
    ("dsprites", "log.showcase"): "any sprite is easy to see: the first test image",
    ("shapes3d", "log.showcase"): "an object whose hue stands out from floor and wall",
    ("mpi3d", "log.showcase"): "a large object that stands out from the background, mid-reach",
}


def _without_docstrings(node):
    for child in ast.walk(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = child.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                child.body = body[1:] or [ast.Pass()]
    return node


def definitions(folder: str, module: str) -> dict[str, str]:
    """{name: code} of the top-level functions, classes and constants of folder/module.py.
    config.py's CONFIG and PRESETS are each dataset's data, not code, and are left out."""
    tree = ast.parse((REPO / folder / f"{module}.py").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = ast.unparse(_without_docstrings(node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and not (
                        module == "config" and target.id in ("CONFIG", "PRESETS")):
                    out[target.id] = ast.unparse(node.value)
    return out


def copies() -> dict[str, dict[str, str]]:
    """{"module.name": {folder: code}} over every folder that defines it."""
    found = {}
    for folder in FOLDERS:
        for module in MODULES:
            for name, code in definitions(folder, module).items():
                found.setdefault(f"{module}.{name}", {})[folder] = code
    return found


COPIES = copies()


def _diff(a_folder, a, b_folder, b) -> str:
    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), f"{a_folder}",
                                          f"{b_folder}", lineterm=""))


@pytest.mark.parametrize("qualified", sorted(COPIES))
def test_copies_are_identical_unless_listed(qualified):
    versions = COPIES[qualified]
    listed = {f for f in versions if (f, qualified) in DIVERGENCES}
    unlisted = {f: code for f, code in versions.items() if f not in listed}
    if unlisted:
        first = min(unlisted)
        for folder, code in sorted(unlisted.items()):
            assert code == unlisted[first], (
                f"{qualified} differs between {first}/ and {folder}/; make them the same, or "
                f"list ({folder!r}, {qualified!r}) in DIVERGENCES with the reason:\n"
                + _diff(first, unlisted[first], folder, code))
        for folder in listed:
            assert versions[folder] != unlisted[first], (
                f"{folder}/{qualified} is listed in DIVERGENCES but equals {first}/'s copy: "
                "remove the entry")


def test_every_divergence_names_a_definition_that_exists():
    for folder, qualified in DIVERGENCES:
        assert folder in COPIES.get(qualified, {}), f"stale DIVERGENCES entry {folder}, {qualified}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_folder_holds_the_whole_method_and_imports_no_other_folder(folder):
    for file in FILES:
        assert (REPO / folder / file).is_file(), f"{folder}/{file} is missing"
    for path in (REPO / folder).glob("*.py"):
        for other in set(_imported_packages(path)) & (set(FOLDERS) - {folder}):
            pytest.fail(f"{path.relative_to(REPO)} imports {other}/: a folder imports only "
                        "itself and common/")


def test_common_holds_utilities_and_imports_no_dataset_folder():
    for path in (REPO / "common").glob("*.py"):
        assert not set(_imported_packages(path)) & set(FOLDERS), path.name
    for gone in ("training.py", "networks.py", "mixture.py", "losses.py", "pictures.py"):
        assert not (REPO / "common" / gone).exists(), f"the method belongs in the folders: {gone}"


def _imported_packages(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0]
