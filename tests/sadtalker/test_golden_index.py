"""Every case of the golden set has a test: a set with a case we cannot run fails here instead of passing quietly.

A case counts as covered when some `test_*.py` in this folder defines `test_<case>` or `test_<case>_<anything>`
(for instance `test_e_mapping_windows_and_mappingnet`). Cases come from `index.json` and from every sidecar
(`*.json` with a `case` key) in the golden folder; the two lists and the tensor files must agree.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


def _sidecar_cases(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "case" in data:
            found[str(data["case"])] = path
    return found


def _test_names() -> set[str]:
    names = set()
    for path in TESTS_DIR.glob("test_*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = (node for node in tree.body if isinstance(node, ast.FunctionDef))
        names |= {node.name for node in functions if node.name.startswith("test_")}
    return names


def test_index_sidecars_and_tensor_files_agree(golden_root: Path) -> None:
    index = json.loads((golden_root / "index.json").read_text())
    sidecars = _sidecar_cases(golden_root)
    differ = set(index) ^ set(sidecars)
    assert not differ, f"index.json and the sidecars list different cases: {sorted(differ)}"
    for name, path in sidecars.items():
        assert path.name == f"{name}.json", f"sidecar {path.name} describes case {name!r}"
        tensors = golden_root / json.loads(path.read_text())["file"]
        assert tensors.is_file(), f"case {name}: tensor file {tensors.name} is missing"
        assert index[name]["file"] == tensors.name


def test_every_golden_case_has_a_test(golden_root: Path) -> None:
    cases = set(json.loads((golden_root / "index.json").read_text())) | set(_sidecar_cases(golden_root))
    names = _test_names()
    missing = sorted(
        case for case in cases if not any(n == f"test_{case}" or n.startswith(f"test_{case}_") for n in names)
    )
    assert not missing, f"golden case(s) without a test in {TESTS_DIR.name}/: {', '.join(missing)}"
