"""Progress bars (rich, on stderr) fed by what the tools print.

- convert_hf_to_gguf.py logs one ``INFO:hf-to-gguf:<tensor>, torch.<dtype> --> <TYPE>, shape``
  line per tensor it prepares, then writes the file;
- llama-quantize prints ``[  12/ 272] <tensor> - [...], type = ...`` per tensor;
- llama-imatrix says ``computing over N chunks`` and ends with ``Final estimate: PPL = x``;
- huggingface_hub's snapshot_download drives a tqdm bar of bytes: :func:`tqdm_bridge`
  forwards it here.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from harness import console

_QUANT_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_CONVERT_LINE = re.compile(r"^INFO:hf-to-gguf:([\w.]+),\s+torch\.\w+\s+-->\s+\w+, shape")
_IMATRIX_TOTAL = re.compile(r"computing over (\d+) chunks")
_IMATRIX_CHUNK = re.compile(r"\[(\d+)\](?:[0-9.]+|nan|inf),")
_PPL = re.compile(r"Final estimate: PPL = ([0-9.eE+-]+|nan|inf)")
_settings = {"enabled": True}


def configure(*, enabled: bool) -> None:
    """Bars off (``-q``, or scripts reading ``--json``)."""
    _settings["enabled"] = enabled


@dataclass
class Bar:
    progress: Progress
    task: TaskID
    label: str
    seen: dict[str, Any] = field(default_factory=dict)  # what the parser picked up (e.g. ppl)

    def update(self, *, completed: float | None = None, total: float | None = None, advance: float | None = None,
               detail: str | None = None) -> None:  # fmt: skip
        kwargs: dict[str, Any] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        if advance is not None:
            kwargs["advance"] = advance
        if detail is not None:
            kwargs["description"] = f"{self.label} [dim]{console.literal(detail)}[/dim]"
        self.progress.update(self.task, **kwargs)

    def finish(self) -> None:
        task = self.progress.tasks[self.task]
        total = task.total if task.total is not None else max(task.completed, 1)
        self.progress.update(self.task, total=total, completed=total, description=self.label)


@contextlib.contextmanager
def bar(label: str, total: float | None = None, *, bytes_: bool = False) -> Iterator[Bar]:
    count = DownloadColumn() if bytes_ else MofNCompleteColumn()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), count, TimeElapsedColumn(),
        console=console.err_console(), disable=not _settings["enabled"], transient=False,
    )  # fmt: skip
    with progress:
        label = console.literal(label)  # names a model or a file
        b = Bar(progress, progress.add_task(label, total=total), label)
        yield b
        b.finish()


def quantize_lines(b: Bar) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        if m := _QUANT_LINE.match(line):
            b.update(completed=int(m.group(1)), total=int(m.group(2)), detail=m.group(3))

    return on_line


def convert_lines(b: Bar) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        if m := _CONVERT_LINE.match(line):
            b.update(advance=1, detail=m.group(1))
        elif "Writing" in line or "gguf_writer:" in line:
            b.update(detail="writing")

    return on_line


def imatrix_lines(b: Bar) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        if m := _IMATRIX_TOTAL.search(line):
            b.update(total=int(m.group(1)))
        chunks = _IMATRIX_CHUNK.findall(line)
        if chunks:
            b.update(completed=max(int(c) for c in chunks))
        if m := _PPL.search(line):
            b.seen["ppl"] = float(m.group(1))

    return on_line


def tqdm_bridge(b: Bar) -> type:
    """A tqdm class for huggingface_hub that draws its byte counts on ``b`` instead of stderr."""
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class Bridge(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._mirror = kwargs.get("name") == "huggingface_hub.snapshot_download"
            kwargs["disable"] = False
            kwargs["file"] = _Null()
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            self._show()

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            self._show()
            return shown

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            super().refresh(*args, **kwargs)
            self._show()

        def _show(self) -> None:
            if getattr(self, "_mirror", False):
                b.update(completed=float(self.n), total=float(self.total) if self.total else None)

    return Bridge


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass
