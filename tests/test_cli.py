import subprocess
import sys

from click.testing import CliRunner

from vidtriplane import __version__
from vidtriplane.cli import COMMANDS, main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from vidtriplane.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'av', 'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_click_usage_errors_are_one_line():
    """A bad option value, an unknown option or command: one line naming the --help to read, exit 2."""
    cases = [(["render", "in.mp4", "-o", "o.mp4", "--yaw", "abc"],
              "vidtriplane: error: Invalid value for '--yaw': 'abc' is not a valid float. "
              "(see 'vidtriplane render --help')"),
             (["evaluate", "--pred", "a", "--target", "b"],
              "vidtriplane: error: Missing option '-o' / '--output'. (see 'vidtriplane evaluate --help')"),
             (["nosuch"], "vidtriplane: error: No such command 'nosuch'. (see 'vidtriplane --help')"),
             (["--bogus"], "vidtriplane: error: No such option '--bogus'. (see 'vidtriplane --help')"),
             (["render", "in.mp4", "-o", "o.mp4", "--engine", "ray", "--gpus-per-worker", "nan"],
              "vidtriplane: error: Invalid value for '--gpus-per-worker': nan is not a finite number. "
              "(see 'vidtriplane render --help')")]
    for args, line in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and result.stderr.splitlines() == [line], result.stderr


def test_a_bare_group_shows_its_help():
    result = CliRunner().invoke(main, ["weights"])
    assert result.stderr.startswith("Usage: vidtriplane weights") and "vidtriplane: error" not in result.stderr


def test_every_registered_command_imports_and_has_help():
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
