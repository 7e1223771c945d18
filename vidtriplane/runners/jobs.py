"""Planning a run: which inputs go to which outputs, checked before any model loads.

``plan`` turns the command line's INPUT and OUTPUT into :class:`Job` s: one for a file or ``-``, one per
video for a folder (mirrored into the output folder). Everything that would lose work or fail late is
refused here, with one message: inputs that do not exist, outputs that would overwrite an input, two
inputs that would write the same output (``a.mp4`` and ``a.mkv`` -> ``a.mp4``), output locations that
cannot be written.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from vidtriplane.errors import PlanError, VidtriplaneError

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".nut", ".ts", ".y4m", ".mpg", ".mpeg",
                    ".flv", ".wmv", ".3gp"}


class UnwritableOutput(VidtriplaneError):
    """An output location that this process cannot write (exit code 1)."""


@dataclass(frozen=True)
class Job:
    """One unit of work: an input and where its result goes."""

    source: str
    """Input path, or "-" for stdin."""
    target: str
    """Output path (file or folder, as the task writes it), or "-" for stdout."""
    outputs: tuple[str, ...] = ()
    """Every file the job writes (empty for stdout): finished when all exist."""

    def finished(self) -> bool:
        return bool(self.outputs) and all(Path(p).exists() for p in self.outputs)

    def partly_done(self) -> list[str]:
        return [p for p in self.outputs if Path(p).exists()]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path) -> None:
    """Refuse (UnwritableOutput) a file or folder path whose location this process cannot create/write."""
    base = _nearest_existing(path)
    if base == path.absolute() and path.is_file():
        base = path.parent
    if not base.is_dir():
        raise UnwritableOutput(f"cannot write {path}: {base} is a file, not a folder")
    try:  # a real probe: permissions, read-only file systems and quotas all show up here
        fd, probe = tempfile.mkstemp(prefix=".vidtriplane-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UnwritableOutput(f"cannot write {path}: {base} is not writable ({exc.strerror}); choose another "
                               "output location") from None


def refuse_output_over_input(src: Path, out_dir: Path, advice: str) -> None:
    """PlanError when the output folder ``out_dir`` is the input ``src`` or holds it (writing it would
    replace or delete the input); ``advice`` says what to do instead."""
    if not out_dir.exists():
        return
    kind = "folder" if src.is_dir() else "file"
    if _same_file(src, out_dir):
        raise PlanError(f"output folder {out_dir} is the input {kind}; {advice}")
    if out_dir.resolve() in src.resolve().parents:
        raise PlanError(f"output folder {out_dir} holds the input {kind} {src}; {advice}")


def plan(
    src: str,
    dst: str,
    *,
    recursive: bool,
    suffix: str,
    outputs_of: Callable[[str], list[str]],
    extensions: set[str] = VIDEO_EXTENSIONS,
) -> tuple[list[Job], bool]:
    """([Job], is_folder) for a file, a folder of ``extensions`` files, or "-".

    ``suffix`` is the output extension used for folder runs (e.g. ".mp4"); ``outputs_of(target)`` lists the
    files one job writes (several with one output per view).
    """
    if src == "-":
        return [_job("-", dst, outputs_of)], False
    path = Path(src)
    if not path.exists():
        raise PlanError(f"input {src} does not exist")
    if path.is_file():
        if dst != "-" and Path(dst).is_dir():
            raise PlanError(f"output {dst} is a folder; give an output file for one input file")
        job = _job(src, dst, outputs_of)
        for out in job.outputs:
            if _same_file(path, Path(out)):
                raise PlanError(f"output {out} is the input file; choose another output name")
        return [job], False
    if dst == "-":
        raise PlanError("a folder of videos cannot be written to stdout; give an output folder")
    out_dir = Path(dst)
    if (out_dir.exists() and not out_dir.is_dir()) or (not out_dir.exists() and out_dir.suffix.lower() in extensions):
        raise PlanError(f"input {src} is a folder, so the output must be a folder, but {dst} is a file")
    refuse_output_over_input(path, out_dir, "outputs mirror their inputs' names, so choose another output "
                                            f"folder (a new one, or one inside {src})")
    files = sorted(path.glob("**/*" if recursive else "*"))
    jobs = []
    for f in files:
        if not f.is_file() or f.suffix.lower() not in extensions or f.name.startswith("."):
            continue
        if _same_file(f.parent, out_dir) or out_dir.resolve() in f.resolve().parents:
            continue  # never read our own outputs back
        jobs.append(_job(str(f), str(out_dir / f.relative_to(path).with_suffix(suffix)), outputs_of))
    if not jobs:
        raise PlanError(f"no videos in {src}" + ("" if recursive else " (use --recursive for subfolders)"))
    _refuse_clashes(jobs)
    for job in jobs:
        for out in job.outputs:
            if _same_file(Path(job.source), Path(out)):
                raise PlanError(f"output {out} would overwrite its input; choose another output folder")
    return jobs, True


def _job(src: str, dst: str, outputs_of: Callable[[str], list[str]]) -> Job:
    return Job(source=src, target=dst, outputs=tuple(outputs_of(dst)) if dst != "-" else ())


def _refuse_clashes(jobs: list[Job]) -> None:
    """Two inputs writing the same output would lose one of them: list every clash and stop."""
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for job in jobs:
        for out in job.outputs:
            key = os.path.normcase(os.path.abspath(out))
            if key in seen:
                clashes.append(f"{seen[key]} and {job.source} -> {out}")
            else:
                seen[key] = job.source
    if clashes:
        shown = "; ".join(clashes[:5]) + (f"; ... ({len(clashes)} in all)" if len(clashes) > 5 else "")
        raise PlanError(f"inputs with the same name would write the same output: {shown}. Rename one of "
                        "each pair, or render them into different output folders")


def check_outputs_writable(jobs: list[Job], folder: Optional[str] = None) -> None:
    """Check every output location (and the folder of a folder run) before any work starts."""
    if folder is not None:
        check_writable(Path(folder))
    for job in jobs:
        for out in job.outputs:
            check_writable(Path(out))
