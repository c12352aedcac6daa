"""The ``stampd`` click group: global options, commands, and how errors reach the operator.

An error prints one line — what failed, where, what to do — and exits with a code from
:class:`ExitCode`. A traceback appears only with ``--debug`` (DESIGN §8).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NamedTuple

import click

from stampd.daemon import __version__
from stampd.daemon.cli.context import CONFIG_HELP, DEBUG_HELP, CliContext, add_global_options
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import JSON_META_KEY, emit_json
from stampd.store.errors import ErrorClass, StampdError

#: What a shell reports for a process ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


class LazyCommand(NamedTuple):
    """A command known by its name and one-line help, imported only when it runs.

    A NamedTuple rather than a frozen dataclass: a dataclass compiles its generated methods
    when the module is imported (~0.6 ms here), which every `stampd` call would pay.
    """

    #: Where the command is: ``"module:attribute"``.
    target: str
    #: Its one-line help as ``stampd --help`` lists it: the first sentence of its docstring
    #: (tests/cli/test_cli_startup.py checks the two stay equal).
    help: str


#: Every command, imported only when it runs. Start-up is part of every command's run time
#: (DESIGN §11: ≤ 100 ms over `python -c pass`): `stampd digest` loads click and store's digest,
#: `status` the config reader, the control client and the index reader, none of them asyncio,
#: httpx, X.509 or sqlite-utils; `stampd --help` lists the commands from this table alone.
COMMANDS: dict[str, LazyCommand] = {
    "run": LazyCommand(
        "stampd.daemon.cli.run:run_command",
        "Run the daemon in the foreground until SIGTERM or Ctrl-C.",
    ),
    "status": LazyCommand(
        "stampd.daemon.cli.status:status_command",
        "Show the daemon, the watches, and counts of files, proofs and jobs.",
    ),
    "ls": LazyCommand(
        "stampd.daemon.cli.query:ls_command",
        "List recorded files at or under PATH (default: everything) with their evidence.",
    ),
    "show": LazyCommand(
        "stampd.daemon.cli.query:show_command",
        "Show every version of PATH with its proofs (and where each waits for its anchor),"
        " jobs and attempts.",
    ),
    "digest": LazyCommand(
        "stampd.daemon.cli.digest:digest_command",
        "Print the SHA-256 (or SHA-512) of each PATH as sha256sum does; '-' reads stdin.",
    ),
    "config": LazyCommand(
        "stampd.daemon.cli.config:config_group",
        "Inspect the configuration file.",
    ),
    "verify": LazyCommand(
        "stampd.daemon.cli.verify:verify_command",
        "Verify the evidence of each PATH offline and say what it proves.",
    ),
    "providers": LazyCommand(
        "stampd.daemon.cli.providers:providers_command",
        "Show each TSA's health: attempts, failures by class, breaker state, last success.",
    ),
    "stamp": LazyCommand(
        "stampd.daemon.cli.actions:stamp_command",
        "Record PATHS now, without waiting for them to settle, and queue their evidence.",
    ),
    "rescan": LazyCommand(
        "stampd.daemon.cli.actions:rescan_command",
        "Walk the watches again (or only the one holding PATH) to find what inotify missed.",
    ),
    "upgrade": LazyCommand(
        "stampd.daemon.cli.actions:upgrade_command",
        "Try every pending upgrade now (or those of the files at or under PATHs).",
    ),
    "reload": LazyCommand(
        "stampd.daemon.cli.actions:reload_command",
        "Re-read the configuration (as SIGHUP does) and wait for the result.",
    ),
    "pause": LazyCommand(
        "stampd.daemon.cli.actions:pause_command",
        "Hold hashing, scans and stamping; watching goes on and nothing is lost.",
    ),
    "resume": LazyCommand(
        "stampd.daemon.cli.actions:resume_command",
        "Continue after `stampd pause`.",
    ),
}


def exit_code_for(error: StampdError) -> ExitCode:
    """The exit code an error maps to; anything not listed means the work failed."""
    # Imported here, on the error path, to keep them off every command's start-up.
    from stampd.daemon.config.problems import ConfigError  # noqa: PLC0415
    from stampd.daemon.service.control_client import DaemonUnreachableError  # noqa: PLC0415

    if isinstance(error, ConfigError):
        return ExitCode.USAGE
    if isinstance(error, DaemonUnreachableError):
        return ExitCode.DAEMON_UNREACHABLE
    return ExitCode.FAILURE


class StampdGroup(click.Group):
    """A group that turns stampd's errors into one clear line and a stable exit code.

    Every command added to it also takes the global options (``--config``, ``--debug``)
    after its name (DESIGN §8); they update the CliContext the group's own options made.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_global_options(self)
        #: Commands not imported yet (see COMMANDS).
        self.lazy_commands: dict[str, LazyCommand] = {}

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        add_global_options(cmd)
        super().add_command(cmd, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = self.lazy_commands.pop(cmd_name, None)
        if lazy is not None:
            module, _, attribute = lazy.target.partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The "Commands" section of ``--help``, without importing a command not yet loaded.

        The same rows click's own ``format_commands`` writes: a command not imported yet
        stands in as a bare ``click.Command`` with its one-line help from COMMANDS, which
        click shortens to the width exactly as it shortens the real docstring.
        """
        commands: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            lazy = self.lazy_commands.get(name)
            command = click.Command(name, help=lazy.help) if lazy else self.get_command(ctx, name)
            if command is not None and not command.hidden:
                commands.append((name, command))
        if not commands:
            return
        # Click's own arithmetic (click.Group.format_commands): the width left for the help.
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        rows = [(name, command.get_short_help_str(limit)) for name, command in commands]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        # There before any subcommand parses its options, so that its --config/--debug land
        # in the context read below on errors (the `cli` callback puts its own in place).
        ctx.ensure_object(CliContext)
        try:
            return super().invoke(ctx)
        except StampdError as error:
            _report(ctx, error.to_dict(), str(error))
            ctx.exit(exit_code_for(error))
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("stampd: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # `stampd status | head -3`: the reader has gone, which is not our error. Point
            # stdout at /dev/null so the interpreter's final flush cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(EXIT_BROKEN_PIPE)
        except Exception as error:
            state = ctx.find_object(CliContext)
            if state is not None and state.debug:
                raise
            detail = f"{type(error).__name__}: {error}"
            _report(
                ctx,
                {"error_class": ErrorClass.INTERNAL, "message": detail},
                f"internal error: {detail} (rerun with --debug for the traceback and report it)",
            )
            ctx.exit(ExitCode.INTERNAL)


def _report(ctx: click.Context, document: dict[str, Any], line: str) -> None:
    # Under --json the error is still one document: {"error": {error_class, message, hint}};
    # a ConfigError adds "problems", its list of {key, value, problem, hint}.
    if ctx.meta.get(JSON_META_KEY):
        emit_json({"error": document})
    click.echo(f"stampd: {line}", err=True)


@click.group(cls=StampdGroup, context_settings={"help_option_names": ["-h", "--help"]})
# The same two options as every command's (add_global_options skips a group that has them);
# here they build the CliContext that the commands' copies then update.
@click.option("--config", "config_option", metavar="FILE", help=CONFIG_HELP)
@click.option("--debug", is_flag=True, help=DEBUG_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="stampd")
@click.pass_context
def cli(ctx: click.Context, config_option: str | None, debug: bool) -> None:
    """stampd — verifiable proof of existence for the files in watched directories.

    Every settled file gets an RFC 3161 timestamp from a failover pool of TSAs, verified and
    written as a FILE.tsr sidecar next to it; every version is recorded with its SHA-256 and
    SHA-512 in a local index (a watch with evidence = [] only records). OpenTimestamps
    anchors, CAdES seals and RFC 4998 evidence records are planned, not available yet.
    Query commands take --json.
    """
    ctx.obj = CliContext(config_option=config_option, debug=debug)


cli.lazy_commands.update(COMMANDS)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="stampd")
