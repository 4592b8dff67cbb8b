"""The shape of the code, as a newcomer meets it: module sizes, and how much of `pipelines/` is
Beam wiring.

Prints, for the tree at ROOT (default: this checkout):

- lines per package (all lines of its `.py` files) and the five largest modules;
- the modules that import Apache Beam;
- the Beam wiring: lines of `beam.DoFn` and `beam.PTransform` subclasses and of the functions
  that use `beam.` names (the graph, the runner options), against all lines of `pipelines/`;
- for one record key, how many files name it (its constant or its string).

Run by hand: `python benchmarks/code_shape.py [ROOT] [--key REGION_TRACK_INDEX_KEY]`.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys


def _py_files(root: str, package: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, package)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(out)


def _lines(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def _imports_beam(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.startswith("apache_beam") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("apache_beam"):
            return True
    return False


def _beam_wiring_lines(tree: ast.Module) -> int:
    """Lines of top-level DoFn/PTransform classes and of top-level functions using `beam.`."""
    total = 0
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = " ".join(ast.unparse(b) for b in node.bases)
            if "DoFn" in bases or "PTransform" in bases:
                total += node.end_lineno - node.lineno + 1
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            uses = any(
                isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name)
                and n.value.id == "beam"
                for n in ast.walk(node)
            )
            if uses:
                total += node.end_lineno - node.lineno + 1
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=os.path.dirname(os.path.dirname(__file__)) or ".")
    ap.add_argument("--key", default="REGION_TRACK_INDEX_KEY", help="a key constant of schemas")
    args = ap.parse_args(argv)
    root = os.path.abspath(args.root)
    packages = ["schemas", "render", "flow", "pipelines", "training"]
    sizes: list[tuple[int, str]] = []
    print(f"tree: {root}")
    print(f"{'package':<22}{'files':>6}{'lines':>8}")
    for package in packages:
        files = _py_files(root, package)
        lines = [_lines(f) for f in files]
        sizes += zip(lines, [os.path.relpath(f, root) for f in files])
        print(f"{package:<22}{len(files):>6}{sum(lines):>8}")
        if package == "pipelines":
            subs = sorted(
                {
                    os.path.relpath(f, root).split(os.sep)[1]
                    for f in files
                    if f.count(os.sep) > root.count(os.sep) + 2
                }
            )
            for sub in subs:
                sf = [f for f in files if os.path.relpath(f, root).split(os.sep)[1] == sub]
                print(f"  pipelines/{sub + '/':<11}{len(sf):>6}{sum(_lines(f) for f in sf):>8}")
    print("\nlargest modules:")
    for n, path in sorted(sizes, reverse=True)[:5]:
        print(f"  {n:>5}  {path}")
    beam_modules, wiring, total = [], 0, 0
    for path in _py_files(root, "pipelines"):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        total += _lines(path)
        if _imports_beam(tree):
            beam_modules.append(os.path.relpath(path, root))
        wiring += _beam_wiring_lines(tree)
    print(f"\nmodules of pipelines/ that import apache_beam ({len(beam_modules)}):")
    for m in beam_modules:
        print(f"  {m}")
    print(f"Beam wiring: {wiring} of {total} lines of pipelines/ ({100 * wiring / total:.1f} %)")
    sys.path.insert(0, root)
    from schemas import media_sequence as ms

    value = getattr(ms, args.key)
    named = []
    for package in [*packages, "tests"]:
        for path in _py_files(root, package):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            n = text.count(args.key) + text.count(f'"{value}"') + text.count(f"'{value}'")
            if n:
                named.append((os.path.relpath(path, root), n))
    code = [(m, n) for m, n in named if not m.startswith("tests" + os.sep)]
    print(
        f"\nfiles naming {args.key} ({value!r}): {len(named)}, of them {len(code)} outside "
        f"tests with {sum(n for _, n in code)} mentions"
    )
    for m, n in named:
        print(f"  {n:>3}  {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
