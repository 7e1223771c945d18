"""The ``vidtriplane`` command: a Click group whose subcommands live in ``vidtriplane.commands``.

Subcommands are imported only when invoked, so ``--help`` and ``--version`` never import torch or av.
To add a command, write ``vidtriplane/commands/<name>.py`` defining a Click command called ``command``
(with the shared options of ``vidtriplane.commands.options``) and add one line to ``COMMANDS``.
Errors escaping any command become one line and an exit code here (``vidtriplane.commands.common.handle``).
"""
from __future__ import annotations

import importlib

import click

from vidtriplane import __version__

# name -> (module, one-line help shown by ``vidtriplane --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "weights": ("vidtriplane.commands.weights", "List, fetch, import and verify model weights."),
    "preprocess": ("vidtriplane.commands.preprocess", "Aligned 512 face crops + dataset.json camera labels (video, images, -)."),
    "render": ("vidtriplane.commands.render", "Render a talking-head video (file, folder or pipe) from novel cameras."),
    "bench": ("vidtriplane.commands.bench", "Frames per second of the model and the whole pipeline (generated weights)."),
    "presets": ("vidtriplane.commands.presets", "List the config presets and named pipelines, by kind."),
    "train": ("vidtriplane.commands.train", "Train TriPlaneNet v1/v2 into a run folder, or resume one."),
    "evaluate": ("vidtriplane.commands.evaluate", "The paper's metrics for a model on aligned crops, or between two folders."),
    "export-mesh": ("vidtriplane.commands.export_mesh", "A .ply/.obj mesh of the inverted head (image + label, or video frames)."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from vidtriplane.commands.common import say_click_error

        try:
            return super().parse_args(ctx, args)
        except click.exceptions.ClickException as exc:  # options before the command: one line too
            ctx.exit(say_click_error(exc))

    def invoke(self, ctx: click.Context):
        from vidtriplane.commands.common import handle, install_signal_handlers, on_exit, say_click_error

        install_signal_handlers()
        try:
            return super().invoke(ctx)
        except SystemExit as exc:
            on_exit(exc)
            raise
        except click.exceptions.ClickException as exc:  # bad options too: one line, Click's exit code
            ctx.exit(say_click_error(exc))
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BaseException as exc:  # every other error: one line + exit code (see commands/common.py)
            ctx.exit(handle(exc))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group("vidtriplane", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="vidtriplane")
def main() -> None:
    """Turn talking-head video into novel-view video with TriPlaneNet (EG3D inversion).

    \b
    Examples:
      vidtriplane weights list
      vidtriplane render input.mp4 --yaw 0.3 -o out.mp4
      ffmpeg -i in.mp4 -f nut - | vidtriplane render - -o - --format nut | ffmpeg -i - out.mp4
    """


if __name__ == "__main__":
    main(prog_name="vidtriplane")
