"""The package's shape: pure imports, and dependencies that point one way between layers."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sglang_esamp"
# each layer may import only itself and the layers before it; launch and lang sit side by side
LAYERS = {
    "core": {"core"},
    "runtime": {"core", "runtime"},
    "launch": {"core", "runtime", "launch"},
    "lang": {"core", "runtime", "launch", "lang"},
    "evaluation": {"core", "runtime", "launch", "lang", "evaluation"},
    "tools": {"core", "runtime", "launch", "lang", "evaluation", "tools"},
}

BLOCK_SGLANG = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "sglang" or name.startswith("sglang."):
            raise ImportError("sglang is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def run_python(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_imports_without_sglang_and_changes_nothing():
    out = run_python(BLOCK_SGLANG + """
import json, os
env, path = dict(os.environ), list(sys.path)
import sglang_esamp.core
from sglang_esamp import ESampConfig
cfg = ESampConfig(max_groups=2)
print(json.dumps({"env": dict(os.environ) == env, "path": sys.path == path, "groups": cfg.max_groups,
                  "sglang": sorted(m for m in sys.modules if m == "sglang" or m.startswith("sglang."))}))
""")
    assert out == {"env": True, "path": True, "groups": 2, "sglang": []}


@pytest.mark.parametrize("order", ["esamp first", "sglang first"])
def test_gen_learns_explore_whichever_is_imported_first(order):
    first, second = ("sglang_esamp", "sglang") if order == "esamp first" else ("sglang", "sglang_esamp")
    out = run_python(f"""
import json
import {first}
import {second}
import sglang as sgl
import sglang_esamp
expr = sgl.gen("answer", max_tokens=8, explore=0.5, explore_group="g")
print(json.dumps({{"kwargs": expr.sampling_params.to_srt_kwargs(), "same": sglang_esamp.gen is sgl.gen}}))
""")
    assert out["same"] and out["kwargs"]["explore"] == 0.5 and out["kwargs"]["explore_group"] == "g"


def _imports(path: Path) -> set[str]:
    """The sglang_esamp layers a module imports (relative and absolute), and "sglang" if it
    imports sglang."""
    tree = ast.parse(path.read_text())
    own = path.relative_to(PACKAGE).parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(own[: len(own) - node.level])
                names = [".".join(["sglang_esamp", *base, *([node.module] if node.module else [])])]
                if not node.module:
                    names = [f"{names[0]}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "sglang":
                found.add("sglang")
            elif parts[0] == "sglang_esamp" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_dependencies_point_one_way(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = {m for m in _imports(path) if m != "sglang" and m in LAYERS and m not in LAYERS[layer]}
        bad |= {"sglang"} if layer == "core" and "sglang" in _imports(path) else set()
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_only_the_cli_sits_beside_the_layers():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "cli.py"]
