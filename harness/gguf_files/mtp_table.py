"""What llama.cpp's loader requires of an MTP block, per architecture, read from a llama.cpp tree.

``python -m harness.gguf_files.mtp_table LLAMA_CPP_DIR`` writes ``harness/data/mtp_archs.json``
(a test regenerates it from the pinned tree and compares).  For every architecture whose
loader (``load_arch_tensors`` in ``src/models/*.cpp``, through ``src/llama-model.cpp``'s
``case LLM_ARCH_X: return new llama_model_y`` and ``src/models/models.h``'s inheritance)
creates ``LLM_TENSOR_NEXTN_*`` tensors it records:

``graph``
    the model files build an MTP draft graph (``LLM_GRAPH_TYPE_DECODER_MTP``), or the
    architecture is an assistant (a file of MTP blocks only, drafting for another model);
    otherwise the MTP tensors are loaded but unused.
``blocks``
    ``trunk``: MTP blocks are built by the same loop as the trunk blocks, so an MTP block
    mirrors a trunk block of its own kind (dense or MoE, attention or recurrent) and the
    audit derives its tensor set from the file; ``separate``: a loop of their own
    (``for (i = n_layer; i < n_layer_all; ...)``) lists every tensor; ``assistant``: the
    file holds MTP blocks only (``for (i = 0; i < n_layer_nextn; ...)``).
``required`` / ``choices`` / ``optional``
    block tensors created unconditionally in the MTP-only code (``if (i >= n_layer)``, the
    separate or assistant loop) without ``TENSOR_NOT_REQUIRED``; ``create_tensor_qkv``
    becomes the choice ``attn_qkv`` or ``attn_q+attn_k+attn_v``; ``optional`` lists every
    block tensor the loader creates with ``TENSOR_NOT_REQUIRED`` (never reported missing).
``global_required``
    tensors outside the blocks that only the MTP code creates (``nextn.post_projection``).
``loads_without_heads``
    the loader probes ``blk.N.nextn.eh_proj.weight`` and loads a file that lacks it
    without MTP (deepseek4, glm4moe, ...); otherwise the missing tensors are fatal.

This is a reader of C++ source for the few statement shapes the loaders use; its output is
checked in and reviewed, never trusted blindly: see tests/test_gguf_mtp.py.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent.parent / "data" / "mtp_archs.json"

_ARCH_NAME = re.compile(r"\{\s*(LLM_ARCH_\w+)\s*,\s*\"([^\"]+)\"\s*\}")
_TENSOR_NAME = re.compile(r"\{\s*(LLM_TENSOR_\w+)\s*,\s*\"([^\"]+)\"\s*\}")
_CASE = re.compile(r"((?:case\s+LLM_ARCH_\w+\s*:\s*)+)return\s+new\s+(llama_model_\w+)\s*\(")
_STRUCT = re.compile(r"struct\s+(llama_model_\w+)\s*:\s*public\s+(llama_model_\w+)")
# ``flags = is_mtp ? TENSOR_SKIP | TENSOR_NOT_REQUIRED : 0``: MTP tensors kept in the file but optional
_PRESERVED = re.compile(r"is_(?:mtp|nextn)\s*\?[^;:]*TENSOR_NOT_REQUIRED")
_TN = re.compile(r"tn\(\s*(LLM_TENSOR_\w+)\s*(?:,\s*\"(\w+)\")?\s*(?:,\s*(\w+))?")


@dataclass
class ArchInfo:
    file: str
    graph: bool
    blocks: str
    loads_without_heads: bool
    required: set[str] = field(default_factory=set)
    choices: list[list[list[str]]] = field(default_factory=list)
    optional: set[str] = field(default_factory=set)
    global_required: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "graph": self.graph,
            "blocks": self.blocks,
            "loads_without_heads": self.loads_without_heads,
            "required": sorted(self.required),
            "choices": self.choices,
            "optional": sorted(self.optional),
            "global_required": sorted(self.global_required),
        }


def _function_body(text: str, signature: str) -> str | None:
    start = text.find(signature)
    if start < 0:
        return None
    brace = text.find("{", start)
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return None


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


@dataclass(frozen=True)
class _Stmt:
    text: str
    contexts: tuple[str, ...]  # the heads of the enclosing blocks, outermost first


def _statements(body: str) -> list[_Stmt]:
    """Statements with the heads (``for (...)``, ``if (...)``, ``else``) of the blocks around them."""
    out: list[_Stmt] = []
    stack: list[str] = []
    current = ""
    paren = 0
    for ch in body:
        if ch == "(":
            paren += 1
        elif ch == ")":
            paren -= 1
        if paren == 0 and ch == "{":
            stack.append(" ".join(current.split()))
            current = ""
        elif paren == 0 and ch == "}":
            if stack:
                stack.pop()
            current = ""
        elif paren == 0 and ch == ";":
            out.append(_Stmt(" ".join((current + ";").split()), tuple(stack)))
            current = ""
        else:
            current += ch
    return out


_LAMBDA = re.compile(r"^auto\s+(\w+)\s*=\s*\[")


def _loop_kind(head: str) -> str | None:
    """What a ``for`` over layers builds: every block, trunk blocks only, MTP blocks only, an assistant's."""
    if "n_layer_nextn" in head and "n_layer_all" not in head:
        return "assistant"
    if re.search(r"=\s*n_layer\s*;", head):
        return "mtp"
    if "n_layer_all" in head:
        return "all"
    if re.search(r"<\s*n_layer\s*;", head):
        return "trunk"
    return None


def _region(contexts: tuple[str, ...], lambdas: dict[str, str]) -> str | None:
    """The innermost loop or lambda around a statement: all | trunk | mtp | assistant (None: outside)."""
    for head in reversed(contexts):
        m = _LAMBDA.match(head)
        if m:
            return lambdas.get(m.group(1))
        if head.startswith("for"):
            return _loop_kind(head)
    return None


def _condition(head: str) -> str | None:
    """'mtp' for ``if (i >= n_layer)`` / ``if (is_nextn)``, 'trunk' for their negation, 'other', or None."""
    if not head.startswith(("if", "else")):
        return None
    if re.search(r"\b\w+\s*>=\s*n_layer\b|(?<!!)\bis_(?:nextn|mtp)\b", head):
        return "trunk" if head.startswith("else") else "mtp"
    if re.search(r"\b\w+\s*<\s*n_layer\b|!\s*is_(?:nextn|mtp)\b", head):
        return "mtp" if head.startswith("else") else "trunk"
    return "other"


def _lambda_kinds(statements: list[_Stmt]) -> dict[str, str]:
    """Each lambda by where it is called from: only MTP loops (mtp), only trunk loops (trunk), or both (all)."""
    names = {m.group(1) for s in statements for h in s.contexts if (m := _LAMBDA.match(h))}
    kinds: dict[str, set[str]] = {name: set() for name in names}
    for s in statements:
        for name in names:
            if re.match(rf"^{name}\s*\(", s.text):
                loop = next((_loop_kind(h) for h in reversed(s.contexts) if h.startswith("for")), None)
                kinds[name].add(loop or "all")
    out = {}
    for name, used in kinds.items():
        if used == {"mtp"}:
            out[name] = "mtp"
        elif used == {"trunk"}:
            out[name] = "trunk"
        elif used:
            out[name] = "all"
    return out


def _tensor_names(stmt: str, names: dict[str, str]) -> list[tuple[str, bool]]:
    """(name inside the block or global name, per-block?) of each ``tn(...)`` in a statement."""
    found = []
    for enum, suffix, index in _TN.findall(stmt):
        pattern = names.get(enum)
        if pattern is None:
            continue
        per_block = pattern.startswith("blk.%d.")
        base = pattern.removeprefix("blk.%d.")
        if index and not index.isidentifier() and not per_block:
            continue
        found.append((f"{base}.{suffix}" if suffix else base, per_block))
    return found


def _analyse(statements: list[_Stmt], names: dict[str, str], info: ArchInfo) -> bool:
    """Fill ``info`` from the loader's statements; True when MTP blocks go through the trunk's code."""
    lambdas = _lambda_kinds(statements)
    mirror = False
    for stmt in statements:
        region = _region(stmt.contexts, lambdas)
        conditions = [c for h in stmt.contexts if (c := _condition(h)) is not None]
        if region == "mtp" and any(
            re.match(rf"^{name}\s*\(", stmt.text) for name, kind in lambdas.items() if kind == "all"
        ):
            mirror = True  # an MTP loop calling the trunk's block loader
        if "create_tensor" not in stmt.text:
            continue
        if region == "all" and "mtp" not in conditions and "trunk" not in conditions:
            mirror = True
        optional = "TENSOR_NOT_REQUIRED" in stmt.text
        mtp_region = region in ("mtp", "assistant") or (region == "all" and "mtp" in conditions)
        unconditional = "other" not in conditions and "trunk" not in conditions and not stmt.text.startswith("if")
        if "create_tensor_qkv" in stmt.text:
            if mtp_region and unconditional and not optional:
                choice = [["attn_qkv.weight"], ["attn_q.weight", "attn_k.weight", "attn_v.weight"]]
                if choice not in info.choices:
                    info.choices.append(choice)
            info.optional.update({"attn_qkv.bias", "attn_q.bias", "attn_k.bias", "attn_v.bias"})
            continue
        for name, per_block in _tensor_names(stmt.text, names):
            if optional and per_block:
                info.optional.add(name)
            if optional or not (mtp_region or "NEXTN" in stmt.text):
                continue
            if per_block and mtp_region and unconditional:
                info.required.add(name)
            elif not per_block and (mtp_region or region is None) and "NEXTN" in stmt.text:
                info.global_required.add(name)  # e.g. nextn.pre_projection / nextn.post_projection
    return mirror


def generate(tree: Path) -> dict[str, Any]:
    """The table for the llama.cpp source tree at ``tree``."""
    arch_cpp = (tree / "src" / "llama-arch.cpp").read_text()
    arch_names = dict(_ARCH_NAME.findall(arch_cpp))
    tensor_names = dict(_TENSOR_NAME.findall(arch_cpp[arch_cpp.find("LLM_TENSOR_NAMES") :]))
    model_cpp = (tree / "src" / "llama-model.cpp").read_text()
    classes: dict[str, str] = {}
    for cases, cls in _CASE.findall(model_cpp):
        for enum in re.findall(r"LLM_ARCH_\w+", cases):
            classes.setdefault(enum, cls)
    parents = dict(_STRUCT.findall((tree / "src" / "models" / "models.h").read_text()))
    sources = {p: p.read_text() for p in sorted((tree / "src" / "models").glob("*.cpp"))}

    def defining(cls: str, method: str) -> tuple[Path, str] | None:
        while True:
            for path, text in sources.items():
                body = _function_body(text, f"{cls}::{method}(")
                if body is not None:
                    return path, body
            if cls not in parents:
                return None
            cls = parents[cls]

    def files_of(cls: str) -> list[str]:
        chain = [cls]
        while chain[-1] in parents:
            chain.append(parents[chain[-1]])
        return [text for text in sources.values() if any(f"{c}::" in text for c in chain)]

    table: dict[str, Any] = {}
    for enum, arch in sorted(arch_names.items(), key=lambda kv: kv[1]):
        cls = classes.get(enum)
        found = defining(cls, "load_arch_tensors") if cls else None
        if found is None or "LLM_TENSOR_NEXTN_" not in found[1]:
            continue
        path, body = found
        hparams = defining(cls, "load_arch_hparams") if cls else None
        texts = files_of(cls) if cls else []
        statements = _statements(_strip_comments(body))
        assistant = any(
            h.startswith("for") and _loop_kind(h) == "assistant" for s in statements for h in s.contexts
        )
        code = body + (hparams[1] if hparams else "")
        info = ArchInfo(
            file=str(path.relative_to(tree)),
            graph=assistant or any("LLM_GRAPH_TYPE_DECODER_MTP" in t for t in texts),
            blocks="assistant",
            loads_without_heads="nextn.eh_proj.weight" in code or bool(_PRESERVED.search(code)),
        )
        mirror = _analyse(statements, tensor_names, info)
        if not assistant:
            info.blocks = "trunk" if mirror else "separate"
        table[arch] = info.to_json()
    return table


def load(path: Path = OUTPUT) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.gguf_files.mtp_table", description=__doc__.split("\n")[0])
    parser.add_argument("tree", type=Path, help="a llama.cpp source tree")
    parser.add_argument("--commit", required=True, help="the tree's commit, recorded as the table's source")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    table = {"source": f"llama.cpp {args.commit[:12]}", "architectures": generate(args.tree)}
    args.output.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{args.output}: {len(table['architectures'])} architectures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
