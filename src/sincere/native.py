"""Compiled versions of the simulator's hot modules (optional; same source, same results).

The modules in :data:`COMPILED` (the continuous engine's API, state, runs and view, its
KV and queue helpers, the roofline step model (with its GEMM and shape-grid helpers) and
the execution model over it, Niyama's
next-token deadlines, power-of-two's draws, the cluster with its routing by counts, and
the event loop) are plain, fully typed Python. ``build()`` compiles
them with mypyc into C extensions, about 1.7x faster on the reference workload; nothing
else changes: the compiled code is the Python source translated, so a run gives identical
results either way (the tests compare the output files of both).

Where they live. Not beside the sources (an extension there would shadow the ``.py`` even
after the source changes) but in ``<sys.prefix>/sincere-native`` (``SINCERE_NATIVE_DIR``
overrides), with a manifest of the SHA-256 of every source file they were compiled from
(the compiled modules and every ``sincere`` module they import, transitively).
``sincere/__init__`` installs a finder that, when the first of them is imported, loads the
compiled modules only if all those files are unchanged and the interpreter's extension
suffix matches; otherwise Python imports the sources as usual. It is all or nothing:
compiled modules call each other's classes directly, so a mix of compiled and interpreted
ones is never loaded.

``SINCERE_NATIVE=0`` turns the compiled modules off. From the shell::

    sincere native status      # active / stale / not built / disabled, and why
    sincere native build       # compile (about 3 min on 2 cores; needs mypy and a C compiler)
    sincere native build --if-stale

The project's scripts build them after installing (``scripts/_venv.sh``); when compiling
is impossible (no C compiler), everything still runs, interpreted.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

COMPILED: tuple[str, ...] = (
    "sincere.engine.async_intake",
    "sincere.engine.clock",
    "sincere.engine.continuous",
    "sincere.engine.gaps",
    "sincere.engine.kv",
    "sincere.engine.kv_intake",
    "sincere.engine.prefix_cache",
    "sincere.engine.request_fit",
    "sincere.engine.runs",
    "sincere.engine.state",
    "sincere.engine.view",
    "sincere.engine.waiting",
    "sincere.perf.execution",
    "sincere.perf.gemm",
    "sincere.perf.roofline",
    "sincere.perf.series",
    "sincere.perf.shape_grid",
    "sincere.policy.routers._draws",
    "sincere.policy.schedulers.deadlines",
    "sincere.sim.cluster",
    "sincere.sim.counts",
    "sincere.sim.runner",
)
"""The modules compiled, as one group (they call each other natively)."""

GROUP = "sincere_native"  # mypyc's shared library is ``sincere_native__mypyc``
MANIFEST = "manifest.json"
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent  # the folder holding the ``sincere`` package


def native_dir() -> Path:
    """Where compiled modules are written and looked for."""
    override = os.environ.get("SINCERE_NATIVE_DIR")
    return Path(override) if override else Path(sys.prefix) / "sincere-native"


def enabled() -> bool:
    """False when ``SINCERE_NATIVE=0`` asks for the interpreted sources."""
    return os.environ.get("SINCERE_NATIVE", "1").strip() not in {"0", "false", "no", "off"}


def source_path(module: str) -> Path:
    """The source file of a ``sincere`` module (a package's ``__init__.py``)."""
    rel = Path(*module.split("."))
    package = SOURCE_ROOT / rel / "__init__.py"
    return package if package.exists() else SOURCE_ROOT / rel.with_suffix(".py")


def dependencies(modules: Sequence[str]) -> list[str]:
    """``modules`` and every ``sincere`` module they import, transitively, sorted.

    Parents of each module (their ``__init__``) count too: importing a module runs them.
    """
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or not source_path(name).exists():
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:k]) for k in range(1, len(parts)))
        todo.extend(_imports_of(name))
    return sorted(seen)


def _imports_of(module: str) -> list[str]:
    import ast

    tree = ast.parse(source_path(module).read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name == "sincere" or name.startswith("sincere.")]


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Status:
    """Whether the compiled modules are (or would be) used, and why not."""

    state: str  # "active", "stale", "not built", "disabled"
    reason: str
    directory: Path

    def line(self) -> str:
        """One line for people."""
        return f"compiled modules: {self.state} ({self.reason}) in {self.directory}"


def check(directory: Path | None = None) -> tuple[Status, dict[str, Path]]:
    """The status of a build and, when usable, the file of every module it provides."""
    import json
    import sysconfig

    where = directory or native_dir()
    if not enabled():
        return Status("disabled", "SINCERE_NATIVE=0", where), {}
    manifest_path = where / MANIFEST
    if not manifest_path.exists():
        return Status("not built", "run: sincere native build", where), {}
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        suffix = str(manifest["ext_suffix"])
        sources: dict[str, str] = dict(manifest["sources"])
        files = {str(name): where / str(file) for name, file in manifest["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return Status("stale", f"unreadable manifest: {exc}", where), {}
    if suffix != sysconfig.get_config_var("EXT_SUFFIX"):
        return Status("stale", f"built for {suffix}, this interpreter loads others", where), {}
    if set(COMPILED) - set(files):
        return Status("stale", "built from an older list of modules", where), {}
    for module, digest in sources.items():
        path = source_path(module)
        if not path.exists() or file_hash(path) != digest:
            return Status("stale", f"{module} changed since the build", where), {}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        return Status("stale", f"missing {missing[0]}", where), {}
    return Status("active", "sources unchanged since the build", where), files


class _Finder:
    """Imports the compiled modules from the build folder; declines everything else.

    A meta path finder by protocol (``find_spec``): subclassing ``importlib.abc`` would
    cost every ``sincere`` command the import of ``importlib.resources``.

    The build is checked (sources hashed) when the first compiled module is imported,
    not when ``sincere`` is: a process that never imports the engine pays nothing.
    """

    def __init__(self) -> None:
        self._names = {*COMPILED, f"{GROUP}__mypyc"}
        self._decided: tuple[Status, dict[str, Path]] | None = None

    def decide(self) -> Status:
        """Check the build once; later calls return the same answer."""
        if self._decided is None:
            self._decided = check()
        return self._decided[0]

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in self._names:
            return None
        self.decide()
        assert self._decided is not None
        file = self._decided[1].get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


_finder: _Finder | None = None
_refused: Status | None = None  # why no finder was installed


def install() -> None:
    """Put the finder in front of the import system (once); it decides on first need."""
    global _finder, _refused
    if _finder is not None or _refused is not None:
        return
    already = [m for m in COMPILED if m in sys.modules]
    if already:  # too late to swap: stay interpreted rather than mix
        reason = f"{already[0]} was imported before the finder"
        _refused = Status("stale", reason, native_dir())
        return
    _finder = _Finder()
    sys.meta_path.insert(0, _finder)


def status() -> Status:
    """Whether this process uses the compiled modules (checking now if nothing asked yet)."""
    if _refused is not None:
        return _refused
    return _finder.decide() if _finder is not None else check()[0]


def source_digests() -> dict[str, str]:
    """SHA-256 of every source a build depends on (:func:`dependencies` of COMPILED)."""
    return {m: file_hash(source_path(m)) for m in dependencies(COMPILED)}


def build(directory: Path | None = None, *, verbose: bool = False) -> Status:
    """Compile :data:`COMPILED` with mypyc into ``directory`` and write its manifest.

    The compiling runs in a child process (:func:`_compile_in_child`), so this process
    never holds mypy's in-memory state: freeing it at exit took about a minute on 2
    cores, after the command had said how long it took.

    Raises :class:`RuntimeError` naming what is missing when mypy or a C compiler is not
    available, or the folder is not writable; the previous build (if any) is kept until
    the new one is complete.
    """
    import tempfile

    missing = [m for m in ("mypyc", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(
            f"compiling needs mypy (with mypyc) and setuptools: no module {missing[0]!r}; "
            "pip install 'sincere[native]'"
        )
    where = directory or native_dir()
    _check_writable(where)  # before the 40 s of compiling, not after
    paths = [str(source_path(m)) for m in COMPILED]
    digests = source_digests()  # before compiling: what mypyc reads
    with tempfile.TemporaryDirectory(prefix="sincere-native-") as tmp:
        work = Path(tmp)
        _compile_in_child(work, paths, verbose)
        try:
            _install_build(work / "lib", where, digests)
        except OSError as exc:
            raise _unwritable(where, exc) from None
    return check(where)[0]


def _compile_in_child(work: Path, paths: Sequence[str], verbose: bool) -> None:
    """Run :func:`_compile` in a fresh interpreter in ``work``; its extensions land in
    ``work/lib``. Raises :class:`RuntimeError` with the end of its output on failure."""
    import subprocess

    code = "import sys; from sincere.native import _compile; _compile(sys.argv[1:])"
    args = [sys.executable, "-c", code, str(work), "1" if verbose else "0", *paths]
    path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}  # this very sincere, however it was found
    done = subprocess.run(
        args, cwd=work, env=env, capture_output=not verbose, text=True, check=False
    )
    if done.returncode != 0:
        said = f"{done.stdout or ''}\n{done.stderr or ''}".strip().splitlines()[-15:]
        raise RuntimeError(
            f"compiling failed (exit {done.returncode})" + "".join(f"\n  {line}" for line in said)
        )


def _compile(argv: Sequence[str]) -> None:
    """The child's work: ``argv`` is the work folder, ``1``/``0`` for verbose, the sources.

    mypyc writes C sources and a mypy cache relative to the current folder (the work
    folder). The child leaves by ``os._exit``: its only output is the files it wrote, and
    tearing down mypy's in-memory state would cost as long again as a small build.
    """
    from mypyc.build import mypycify
    from setuptools import Distribution

    work, verbose, paths = Path(argv[0]), argv[1] == "1", list(argv[2:])
    os.chdir(work)
    code = 0
    try:
        options = ["--ignore-missing-imports", "--cache-dir", str(work / "mypy-cache")]
        extensions = mypycify(
            [*options, *paths],
            opt_level="3",
            target_dir=str(work / "c"),
            group_name=GROUP,
            verbose=verbose,
        )
        dist = Distribution({"name": "sincere-native", "ext_modules": extensions})
        dist.script_args = [
            *(["--verbose"] if verbose else ["--quiet"]),
            "build_ext",
            f"--build-lib={work / 'lib'}",
            f"--build-temp={work / 'tmp'}",
        ]
        dist.parse_command_line()
        dist.run_commands()
    except SystemExit as exc:  # distutils reports compiler failures this way
        print(f"compiling failed: {exc}", file=sys.stderr)
        code = 1
    except Exception as exc:  # mypyc's own errors: reported to the parent, which raises
        print(f"compiling failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _unwritable(where: Path, exc: OSError) -> RuntimeError:
    return RuntimeError(
        f"cannot write the build to {where}: {exc}; set SINCERE_NATIVE_DIR to a writable "
        "folder (set the same way when sincere runs)"
    )


def _check_writable(where: Path) -> None:
    """Raise the :func:`build` error now if ``where``'s parent cannot take a build."""
    import tempfile

    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where.parent, prefix=".sincere-native-"):
            pass
    except OSError as exc:
        raise _unwritable(where, exc) from None


def _install_build(lib: Path, where: Path, digests: dict[str, str]) -> None:
    """Move the built extensions into ``where`` (replacing any older build) + manifest."""
    import json
    import shutil
    import sysconfig

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    files: dict[str, str] = {}
    staging = where.with_name(where.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for so in sorted(lib.rglob(f"*{suffix}")):
        rel = so.relative_to(lib).with_suffix("").with_suffix("")  # drop the ABI suffix
        name = ".".join(rel.parts)
        target = f"{name}{suffix}"
        shutil.copy2(so, staging / target)
        files[name] = target
    shared = f"{GROUP}__mypyc"
    wanted = {*COMPILED, shared}
    if set(files) != wanted:
        raise RuntimeError(f"the build made {sorted(files)}, expected {sorted(wanted)}")
    manifest = {
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "ext_suffix": suffix,
        "files": files,
        "sources": digests,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(where, ignore_errors=True)
    staging.rename(where)
