"""The README's piping examples, run as written through bash with the real ffmpeg binary.

Only what cannot run here is substituted, each substitution checked so a README edit cannot silently
turn this test into a no-op: ``vidtriplane render`` becomes this interpreter with the tiny generated-weights
model, the raw frame size matches the small test clip, and ``ffplay -`` (needs a screen) becomes a file
that is then decoded. Skips where ffmpeg is not installed (``.ci/run`` installs Debian's).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.commands.test_render_cli import REPO, TINY, decode_frames
from tests.io.media import make_video, pattern, probe

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

SIZE = 64
N_FRAMES = 4


def readme_pipe_commands() -> list[str]:
    """The commands of the bash block under '### Piping and folders' that use a pipe (continuations joined)."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Piping and folders", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = re.sub(r"\\\n\s*", "", block).splitlines()
    return [c.split("  #")[0].strip() for c in commands if "|" in c]


def localise(command: str) -> str:
    """The README command with the substitutions described in the module docstring (each must apply)."""
    vidtriplane = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "vidtriplane.cli"])
    tiny = " ".join(shlex.quote(a) for a in TINY)
    assert "vidtriplane render " in command, command
    command = command.replace("vidtriplane render ", f"{vidtriplane} render {tiny} ")
    if "--raw-size" in command:
        command, n = re.subn(r"--raw-size \d+x\d+", f"--raw-size {SIZE}x{SIZE}", command)
        assert n == 1, command
    if "ffplay" in command:
        command, n = re.subn(r"\| ffplay -$", "> played.nut", command)
        assert n == 1, command
    return "set -o pipefail; " + command


def run_readme(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(["bash", "-c", localise(command)], check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=600)


def input_tile_error(path: Path) -> float:
    """Mean absolute difference between the output's first (input) tile and the frames that went in."""
    frames = decode_frames(path)
    assert frames.shape[0] == N_FRAMES
    want = np.stack([pattern(i, SIZE, SIZE) for i in range(N_FRAMES)]).astype(np.float32)
    return float(np.abs(frames[:, :, :SIZE].astype(np.float32) - want).mean())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    make_video(root / "in.mp4", n_frames=N_FRAMES, width=SIZE, height=SIZE)
    make_video(root / "faststart.mp4", n_frames=N_FRAMES, width=SIZE, height=SIZE, movflags="faststart")
    return root


def test_readme_has_the_three_pipe_examples():
    commands = readme_pipe_commands()
    assert len(commands) == 3, commands
    assert commands[0].startswith("ffmpeg -i in.mp4 -f nut - |") and commands[0].endswith("ffmpeg -i - out.mp4")
    assert commands[1].startswith("cat faststart.mp4 |") and commands[1].endswith("> out.mkv")
    assert "-f rawvideo -pix_fmt rgb24" in commands[2] and commands[2].endswith("| ffplay -")


@pytest.mark.parametrize("index, output, has_audio, tiles", [(0, "out.mp4", True, 3), (1, "out.mkv", True, 3),
                                                             (2, "played.nut", False, 3)])
def test_readme_pipe_example_runs(workdir, index, output, has_audio, tiles):
    command = readme_pipe_commands()[index]
    (workdir / output).unlink(missing_ok=True)
    proc = run_readme(command, workdir)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    info = probe(workdir / output)
    assert info["n"] == N_FRAMES and info["size"] == (tiles * SIZE, SIZE)
    assert info["has_audio"] == has_audio
    # the first tile is the input itself (after two lossy encodes): frame order and content survived the pipes
    assert input_tile_error(workdir / output) < 12.0
