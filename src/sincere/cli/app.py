"""Root typer app: the verb table, loaded lazily, and the one-line error handler.

How a verb is added (and why it starts fast). ``sincere --help`` and every verb must
start in a fraction of a second, so nothing heavy is imported before it is needed:

1. Write the verb in its own module ``sincere/cli/<verb>.py`` that registers on the
   root ``app`` as usual: ``@app.command("name")``, or for a verb with subcommands
   ``group = verb_group("name", "help")`` (see :func:`verb_group` and :class:`VerbGroup`).
2. Add one row to :data:`VERBS` below: the verb's name, the module(s) that register it,
   and its one-line summary (what ``sincere --help`` lists).
3. At the top of the module import only the standard library, ``typer``, ``rich`` and
   light ``sincere`` modules (``sincere.core.errors``, ``sincere.cli.*``); import NumPy,
   SciPy, pyarrow, matplotlib, aiohttp, torch and the layers that pull them in
   (``sincere.sim``, ``sincere.workload``, ``sincere.experiment``, ``sincere.perf``,
   ``sincere.estimate``, ``sincere.optimize``, ``sincere.fit``, ``sincere.catalog``,
   ``sincere.serve``, ...) inside the command function. Type hints that need those use
   ``TYPE_CHECKING`` imports. Help texts that list a registry's names write them out
   (reading the registry would import its package); ``tests/cli/test_cli_help.py``
   checks them against the registry.

``sincere --help`` imports no verb module at all (it prints the summaries of the
table); ``sincere VERB ...`` imports only that verb's modules. Errors that sincere
raises on purpose (``SincereError``) and unreadable files (``OSError``) end the
process with one line on stderr and exit status 2; anything else is a bug and keeps
its traceback. Help is plain text (``rich_markup_mode=None``), so square brackets such
as ``sincere[native]`` reach the user as written. ``tests/outsider/test_cli_startup.py``
pins this structure.
"""

from __future__ import annotations

import gc
import importlib
import sys
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from sincere import __version__


@dataclass(frozen=True)
class Verb:
    """One top-level verb: the modules that register it and its one-line summary."""

    modules: tuple[str, ...]  # imported, in order, when the verb is used
    summary: str  # the line ``sincere --help`` shows


VERBS: dict[str, Verb] = {
    "experiment": Verb(
        ("sincere.cli.experiment",),
        "Run a sweep (strategies x traffic x environment) and write its report.",
    ),
    "report": Verb(("sincere.cli.experiment",), "(Re)write the report of an experiment folder."),
    "capacity": Verb(
        ("sincere.cli.experiment",),
        "Highest arrival rate whose worst tier misses at most 1 % of its SLOs, per policy.",
    ),
    "simulate": Verb(
        ("sincere.cli.simulate",), "Simulate a workload on a cluster (discrete-event, fast)."
    ),
    "plan": Verb(
        ("sincere.cli.plan",), "Inferno's capacity optimizer: accelerators, replicas, batch."
    ),
    "estimate": Verb(
        ("sincere.cli.estimate",),
        "Latency and memory of a deployment from fingerprints (MaverIQ) or the roofline.",
    ),
    "deploy": Verb(
        ("sincere.cli.deploy",), "Choose TP, PP and precision for a model and place it."
    ),
    "emulate": Verb(
        ("sincere.cli.emulate",), "Run emulated engines: OpenAI-compatible servers, no GPU."
    ),
    "serve": Verb(
        ("sincere.cli.serve",), "Run the OpenAI-compatible gateway described by a config."
    ),
    "bench": Verb(
        ("sincere.cli.bench",), "Send a workload to an OpenAI-compatible URL and measure it."
    ),
    "profile": Verb(("sincere.cli.profile",), "Profile real engines (HTTP endpoints, PyTorch)."),
    "fit": Verb(
        ("sincere.cli.fit", "sincere.cli.fit_sincere_runs", "sincere.cli.fit_model_data"),
        "Fit step-time models to profiles, GPU kernel profiles or SINCERE's runs.",
    ),
    "step": Verb(
        ("sincere.cli.step",), "One iteration's time on a deployment, broken into its parts."
    ),
    "speculate": Verb(
        ("sincere.cli.speculate",),
        "Where speculative decoding pays: time per token with and without, by batch size.",
    ),
    "validate": Verb(
        ("sincere.cli.validate",),
        "Replay real runs (SINCERE's H100 cells) through the simulator and compare.",
    ),
    "predict": Verb(
        ("sincere.cli.predict",), "Train, evaluate and inspect learned latency/length predictors."
    ),
    "keys": Verb(("sincere.cli.keys",), "Create, list and revoke the gateway's API keys."),
    "seal": Verb(("sincere.cli.seal",), "Confidential mode: key pairs and the sealing proxy."),
    "trace": Verb(("sincere.cli.trace",), "Inspect and convert request traces."),
    "catalog": Verb(("sincere.cli.catalog",), "List the accelerators and models sincere knows."),
    "native": Verb(("sincere.cli.native",), "Build or check the compiled simulator modules."),
}


class VerbGroup(TyperGroup):
    """A group of subcommands whose ``--help``, when not given, costs nothing.

    Typer converts each option value that is not already a bool through pydantic, and a
    group's ``--help`` is None when it is absent: that one conversion imports pydantic,
    about half of ``sincere VERB SUBCOMMAND --help``. A False default needs no conversion.
    """

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


class LazyVerbs(VerbGroup):
    """The root group: lists :data:`VERBS` and imports a verb's modules only when it runs."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """What the verb list shows: the table's summary (nothing is imported)."""
        verb = VERBS.get(cmd_name)
        if verb is None:
            return None
        return TyperCommand(cmd_name, help=verb.summary, short_help=verb.summary)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """The verb to run: its modules imported on first use."""
        if args and args[0] in VERBS:
            if args[0] not in self.commands:
                self.commands[args[0]] = load_verb(args[0])
            return args[0], self.commands[args[0]], args[1:]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="sincere",
    cls=LazyVerbs,
    help="SLO-aware scheduling for LLM inference: simulate, plan, estimate and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def verb_group(
    name: str, help_text: str, *, cls: type[VerbGroup] = VerbGroup, no_args_is_help: bool = True
) -> typer.Typer:
    """A verb with subcommands, registered on the root :data:`app` as ``name``; ``cls`` is
    its group class (a :class:`VerbGroup`, which may pick a default subcommand)."""
    group = typer.Typer(cls=cls, help=help_text, no_args_is_help=no_args_is_help)
    app.add_typer(group, name=name)
    return group


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def load_verb(name: str) -> Any:
    """Import the modules of verb ``name`` and return its click command."""
    for module in VERBS[name].modules:
        importlib.import_module(module)
    command = typer.main.get_group(app).commands.get(name)
    if command is None:
        raise RuntimeError(f"{VERBS[name].modules} did not register the verb {name!r}")
    return command


def _register() -> None:
    """Import every verb module (for tests that call verbs through ``app`` directly)."""
    for name in VERBS:
        load_verb(name)


def main() -> None:
    """Entry point: run the app, turning sincere's own errors into a one-line reason.

    What the verb leaves alive when it ends lives until the process does, so it is frozen
    (``gc.freeze``): the interpreter's collections at exit then skip it instead of walking
    every object a run built (about 0.1 s after Mooncake's trace). ``atexit`` handlers
    still run; a cycle left unreachable is not finalised, and none needs to be: files are
    opened in ``with`` blocks, closed when the verb returns."""
    try:
        app()
    except Exception as exc:
        from sincere.core.errors import SincereError

        if not isinstance(exc, SincereError | OSError):
            raise
        message = str(exc) if isinstance(exc, SincereError) else _os_reason(exc)
        typer.echo(f"{typer.style('error:', fg='red')} {message}", err=True)
        sys.exit(2)
    finally:
        gc.freeze()


def _os_reason(exc: OSError) -> str:
    """One line for a file that cannot be read or written: the path and the reason."""
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
