"""What a Hugging Face checkpoint directory holds, read without loading a tensor.

``config.json`` gives the architecture (as the converter picks it: ``architectures[0]``,
or ``text_config.architectures[0]``) and the MTP layer count; the safetensors headers, read
with the ``safetensors`` library's ``safe_open`` (which maps the file and parses only the
header), give every tensor's dtype and shape, so parameter counts and the size of each
conversion are known before anything is converted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}  # fmt: skip
MTP_KEYS = ("mtp_num_hidden_layers", "num_nextn_predict_layers", "nextn_predict_layers")
MTP_PREFIXES = ("mtp.", "model.mtp.")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict[str, Any]
    files: tuple[str, ...]  # the files conversion reads (relative names)
    tensors: int
    params: int
    weight_bytes: int
    mtp_tensors: int

    @property
    def architecture(self) -> str | None:
        return architecture(self.config)

    @property
    def mtp_layers(self) -> int:
        """MTP layers the config declares, or 1 when only ``mtp.*`` tensors say so."""
        for cfg in (self.config, self.config.get("text_config") or {}):
            for k in MTP_KEYS:
                value = cfg.get(k)
                if isinstance(value, int) and value > 0:
                    return value
        return 1 if self.mtp_tensors else 0


def architecture(config: dict[str, Any]) -> str | None:
    arch = None
    if archs := config.get("architectures"):
        arch = archs[0]
    text = config.get("text_config") or {}
    if text.get("architectures"):
        arch = text["architectures"][0]
    return arch if isinstance(arch, str) else None


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{directory}: no config.json (not a Hugging Face checkpoint)") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object")
    return data


def safetensors_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Tensor name -> (dtype, shape) of a safetensors file; an InputError when it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            out = {}
            for name in f.keys():  # noqa: SIM118  (a safe_open handle, not a dict)
                part = f.get_slice(name)
                out[name] = (str(part.get_dtype()), [int(d) for d in part.get_shape()])
            return out
    except SafetensorError as exc:
        raise InputError(f"{path}: not a valid safetensors file: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def conversion_files(directory: Path) -> list[str]:
    """The top-level files the converter may read (what the pipeline digests)."""
    names = []
    for p in sorted(directory.iterdir()):
        if p.is_file() and not p.name.startswith(".") and (
            p.suffix in (".json", ".safetensors", ".model", ".tiktoken", ".txt", ".jinja")
            or p.name == "README.md"
        ):
            names.append(p.name)
    return names


def read(directory: Path) -> Checkpoint:
    config = read_config(directory)
    files = conversion_files(directory)
    parts = [n for n in files if n.endswith(".safetensors")]
    if not parts:
        raise InputError(
            f"{directory}: no *.safetensors files",
            hint="the pipeline converts safetensors checkpoints (PyTorch .bin checkpoints are not supported)",
        )
    _check_index(directory, parts)
    tensors = params = weight_bytes = mtp = 0
    for part in parts:
        for name, (dtype, shape) in safetensors_header(directory / part).items():
            n = 1
            for d in shape:
                n *= d
            tensors += 1
            params += n
            weight_bytes += n * DTYPE_BYTES.get(dtype, 2)
            if name.startswith(MTP_PREFIXES):
                mtp += 1
    return Checkpoint(directory, config, tuple(files), tensors, params, weight_bytes, mtp)


INDEX = "model.safetensors.index.json"


def _check_index(directory: Path, parts: list[str]) -> None:
    """The shards ``model.safetensors.index.json`` names are all in the directory (the converter
    reads the index and fails on a missing one only after loading the others, with a traceback)."""
    path = directory / INDEX
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise InputError(f"{path}: no weight_map (tensor name -> shard file)")
    have = set(parts)
    missing = sorted({str(v) for v in weight_map.values()} - have)
    if missing:
        tensors = sum(1 for v in weight_map.values() if str(v) in missing)
        raise InputError(
            f"{directory}: {INDEX} names {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}, "
            f"which {'is' if len(missing) == 1 else 'are'} not in the directory ({tensors} tensor(s) live there)",
            hint="the download is incomplete: fetch the missing shard(s) again (`hf download REPO FILE`)",
        )
