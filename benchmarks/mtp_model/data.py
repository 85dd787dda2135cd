"""The training corpus: chat-formatted tasks built from text already on this machine.

Four task kinds, one per bench category, each a ChatML conversation with the system prompt
llama-server renders from the model's template (``models/ggml-vocab-qwen35.gguf``), so the
model sees at training time exactly the prefix ``harness bench`` sends:

- ``code``: "write the module X" (the start of a Python source file) and "return this code
  unchanged" (a block of lines copied from the prompt);
- ``json``: "write the JSON file X" (a JSON file re-indented) and "reformat this JSON"
  (compact JSON in the prompt, indented in the answer);
- ``quote``: a prose paragraph in the prompt, the answer quotes its opening sentence(s)
  or all of it;
- ``creative``: "write a text about T" (prose from Markdown docs, licenses, package
  copyright notices and READMEs; T from the heading or the file).

Sources are walked in sorted order and sampled with a fixed seed, so the same machine gives
the same corpus; another machine gives a similar one (its own files), and ``manifest.json``
records the sha256 of what was used.  Usage: ``python data.py OUT_DIR [--mb N]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

SYSTEM = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
MAX_ANSWER = 1800  # characters of an answer (about 450-600 tokens)
CODE_ROOTS = ["/usr/lib/python3.11", "/usr/lib/python3/dist-packages", "/usr/lib/google-cloud-sdk/lib"]
JSON_ROOTS = ["/usr/lib/google-cloud-sdk", "/usr/share", "/usr/lib/node_modules", "/tmp/llsrc"]
PROSE_ROOTS = ["/usr/share/doc", "/usr/share/common-licenses", "/usr/lib/node_modules", "/tmp/llsrc/docs",
               "/usr/lib/python3/dist-packages", "/usr/lib/jvm", sysconfig.get_paths()["purelib"]]  # fmt: skip

CODE_WRITE = [
    "Write the Python module `{mod}`.",
    "Write the Python source file {path}.",
    "Show the code of the Python module `{mod}`.",
    "Implement the Python module `{mod}` in full.",
]
CODE_COPY = [
    "Return this Python code unchanged, as a code block.",
    "Here is part of a Python module. Return it in full, unchanged otherwise.",
    "Repeat this Python code exactly as written.",
    "Fix the style of this Python code if needed and give the complete code.",
]
JSON_WRITE = [
    "Write the JSON file `{name}`. Answer with the JSON only.",
    "Produce the content of `{name}` as JSON. Answer with the JSON only.",
    "Give the JSON document {path}. Answer with the JSON only.",
]
JSON_PART = [
    "Write the `{key}` entry of the JSON file `{name}`. Answer with the JSON only.",
    "Produce the JSON value at `{key}` in `{name}`. Answer with the JSON only.",
]
JSON_REFORMAT = [
    "Reformat this JSON with two-space indentation. Answer with the JSON only.",
    "Pretty-print this JSON document. Answer with the JSON only.",
    "Convert this compact JSON into indented JSON, keys in the same order. Answer with the JSON only.",
]
QUOTE_WHAT = ["a text", "an article", "a passage", "a notice", "a document"]
QUOTE_ASK = [
    ("Start by quoting the opening sentence exactly.", 1),
    ("First, quote the first two sentences exactly as written.", 2),
    ("Quote the passage exactly as written.", 0),
    ("Quote the text's opening sentence, then the next one.", 2),
]
PROSE_ASK = [
    "Write a text about {topic}.",
    "Write a short article about {topic}.",
    "Write about {topic}.",
    "Tell me about {topic}.",
]


def chat(user: str, answer: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"


def clip(text: str, limit: int = MAX_ANSWER) -> str:
    """At most ``limit`` characters, cut after a whole line."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def walk(roots: list[str], suffixes: tuple[str, ...], lo: int = 400, hi: int = 400_000) -> list[Path]:
    found: set[Path] = set()
    for root in roots:
        base = Path(root)
        if not base.exists():
            continue
        for p in base.rglob("*"):
            try:
                if (
                    p.name.endswith(suffixes)
                    and p.is_file()
                    and not p.is_symlink()
                    and lo <= p.stat().st_size <= hi
                ):
                    found.add(p)
            except OSError:
                continue
    return sorted(found)


def read(path: Path) -> str | None:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


# --- code ------------------------------------------------------------------------------------


def code_samples(rng: random.Random, budget: int) -> Iterator[tuple[str, str]]:
    files = walk(CODE_ROOTS, (".py",), lo=800)
    rng.shuffle(files)
    for path in files:
        if budget <= 0:
            return
        text = read(path)
        if not text or "\t" in text[:2000] or "\x00" in text:
            continue
        text = text.strip("\n")
        mod = (
            ".".join(path.with_suffix("").parts[-3:])
            .replace("site-packages.", "")
            .replace("dist-packages.", "")
        )
        head = clip(text)
        user = rng.choice(CODE_WRITE).format(mod=mod, path="/".join(path.parts[-3:]))
        sample = chat(user, f"```python\n{head}\n```")
        budget -= len(sample)
        yield str(path), sample
        lines = text.splitlines()
        if len(lines) > 60:  # a block of lines from further down, copied from the prompt
            start = rng.randrange(20, len(lines) - 30)
            block = clip("\n".join(lines[start : start + rng.randrange(15, 40)]), 1200).strip("\n")
            if len(block) > 200:
                sample = chat(
                    f"{rng.choice(CODE_COPY)}\n\n```python\n{block}\n```", f"```python\n{block}\n```"
                )
                budget -= len(sample)
                yield str(path), sample


# --- json ------------------------------------------------------------------------------------


def json_samples(rng: random.Random, budget: int) -> Iterator[tuple[str, str]]:
    files = walk(JSON_ROOTS, (".json",), lo=300, hi=300_000)
    rng.shuffle(files)
    seen: set[str] = set()
    for path in files:
        if budget <= 0:
            return
        text = read(path)
        if text is None:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        pretty = json.dumps(obj, indent=2, ensure_ascii=False)
        digest = hashlib.sha256(pretty[:4000].encode()).hexdigest()
        if digest in seen or len(pretty) < 200:
            continue
        seen.add(digest)
        user = rng.choice(JSON_WRITE).format(name=path.name, path="/".join(path.parts[-3:]))
        sample = chat(user, clip(pretty))
        budget -= len(sample)
        yield str(path), sample
        for _ in range(4):  # sub-objects of larger files: more JSON from the same few files
            found = _sub_object(obj, rng)
            if found is not None:
                key, value = found
                user = rng.choice(JSON_PART).format(key=key, name=path.name)
                sample = chat(user, clip(json.dumps(value, indent=2, ensure_ascii=False)))
                budget -= len(sample)
                yield str(path), sample
        for _ in range(2):
            part = _small_part(obj, rng)
            if part is not None:
                compact = json.dumps(part, ensure_ascii=False, separators=(",", ":"))
                answer = json.dumps(part, indent=2, ensure_ascii=False)
                sample = chat(f"{rng.choice(JSON_REFORMAT)}\n\n{compact}", answer)
                budget -= len(sample)
                yield str(path), sample


def _sub_object(obj: object, rng: random.Random) -> tuple[str, object] | None:
    """A dotted key and its value (an object or array of 200..MAX_ANSWER pretty characters)."""
    path: list[str] = []
    for _ in range(8):
        if isinstance(obj, dict) and obj:
            key = rng.choice(list(obj))
            path.append(str(key))
            obj = obj[key]
        elif isinstance(obj, list) and obj:
            i = rng.randrange(len(obj))
            path.append(str(i))
            obj = obj[i]
        else:
            return None
        if (
            isinstance(obj, (dict, list))
            and 200 <= len(json.dumps(obj, indent=2, ensure_ascii=False)) <= MAX_ANSWER
        ):
            return ".".join(path), obj
    return None


def _small_part(obj: object, rng: random.Random, limit: int = 900) -> object | None:
    """A sub-object or sub-array whose compact form has 150..limit characters."""
    for _ in range(12):
        size = len(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
        if 150 <= size <= limit:
            return obj
        if isinstance(obj, dict) and obj:
            if size < 150:
                return None
            obj = obj[rng.choice(list(obj))]
        elif isinstance(obj, list) and obj:
            if size < 150:
                return None
            if len(obj) > 3 and rng.random() < 0.5:
                k = rng.randrange(1, 4)
                obj = obj[:k]
            else:
                obj = rng.choice(obj)
        else:
            return None
    return None


# --- prose: quote and creative ---------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_WORDY = re.compile(r"[A-Za-z]")


def prose_docs() -> list[tuple[Path, str, list[str]]]:
    """(file, topic, paragraphs) for every prose file; paragraphs deduplicated across files."""
    files = walk(PROSE_ROOTS, (".md", ".rst", "copyright", ".txt", "README", "README.gz", "README.md.gz", "NEWS.gz"),
                 lo=300)  # fmt: skip
    files += sorted(p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file())
    seen: set[str] = set()
    docs = []
    for path in files:
        text = read(path)
        if not text:
            continue
        paras = []
        in_code = False
        for block in re.split(r"\n\s*\n", text):
            if block.lstrip().startswith("```"):
                in_code = not in_code if block.count("```") % 2 else in_code
                continue
            if in_code:
                continue
            para = " ".join(line.strip() for line in block.splitlines()).strip()
            if len(para) < 120 or para.startswith(
                ("#", "|", "<", "-", "*", "[", "!", "Files:", "Copyright", "License:")
            ):
                continue
            letters = len(_WORDY.findall(para))
            if letters < 0.7 * len(para) or para.count("  ") > 3:
                continue
            key = hashlib.sha256(para.lower().encode()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            paras.append(para)
        if paras:
            docs.append((path, _topic(path, text), paras))
    return docs


def _topic(path: Path, text: str) -> str:
    m = re.search(r"^#\s+(.{3,80})$", text, re.M)
    if m:
        return m.group(1).strip().strip("#").strip()
    if path.name == "copyright":
        return f"the copyright and license of the {path.parent.name} package"
    if path.parent.name == "common-licenses":
        return f"the {path.name} license"
    return f"{path.parent.name} ({path.name})"


def quote_samples(
    docs: list[tuple[Path, str, list[str]]], rng: random.Random, budget: int
) -> Iterator[tuple[str, str]]:
    paras = [(path, p) for path, _, ps in docs for p in ps if 250 <= len(p) <= 1400]
    rng.shuffle(paras)
    for path, para in paras:
        if budget <= 0:
            return
        sentences = _SENTENCE.split(para)
        for ask, n in rng.sample(QUOTE_ASK, 2):
            if n and len(sentences) <= n:
                continue
            quoted = para if n == 0 else " ".join(sentences[:n])
            user = f"Here is {rng.choice(QUOTE_WHAT)}:\n\n{para}\n\n{ask}"
            sample = chat(user, f'"{quoted}"')
            budget -= len(sample)
            yield str(path), sample


def creative_samples(
    docs: list[tuple[Path, str, list[str]]], rng: random.Random, budget: int
) -> Iterator[tuple[str, str]]:
    order = list(docs)
    rng.shuffle(order)
    rounds = 0
    while budget > 0 and rounds < 10:  # long documents give several answers, one window each
        for path, topic, paras in order:
            if budget <= 0:
                return
            start = rounds * 3
            if start >= len(paras):
                continue
            answer = clip("\n\n".join(paras[start : start + 6]))
            if len(answer) < 200:
                continue
            sample = chat(rng.choice(PROSE_ASK).format(topic=topic), answer)
            budget -= len(sample)
            yield str(path), sample
        rounds += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mb", type=float, default=10.0, help="millions of characters per category (at most)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    budget = int(args.mb * 1e6)
    args.out.mkdir(parents=True, exist_ok=True)
    docs = prose_docs()
    kinds = {
        "code": code_samples(random.Random(args.seed), budget),
        "json": json_samples(random.Random(args.seed + 1), budget),
        "quote": quote_samples(docs, random.Random(args.seed + 2), budget),
        "creative": creative_samples(docs, random.Random(args.seed + 3), budget),
    }
    rows: list[dict[str, str]] = []
    stats: dict[str, dict[str, int]] = {}
    for cat, gen in kinds.items():
        files: set[str] = set()
        chars = 0
        for path, text in gen:
            rows.append({"cat": cat, "text": text})
            files.add(path)
            chars += len(text)
        stats[cat] = {"samples": sum(r["cat"] == cat for r in rows), "files": len(files), "chars": chars}
    random.Random(args.seed + 4).shuffle(rows)
    held = [r for i, r in enumerate(rows) if i % 200 == 0]  # held out: validation loss and the CPU checks
    train = [r for i, r in enumerate(rows) if i % 200 != 0]
    for name, part in (("train", train), ("valid", held)):
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode()
        (args.out / f"{name}.jsonl.xz").write_bytes(lzma.compress(payload, preset=9))
    manifest = {
        "seed": args.seed,
        "mb_per_category": args.mb,
        "categories": stats,
        "train_samples": len(train),
        "valid_samples": len(held),
        "sha256": {
            n: hashlib.sha256((args.out / f"{n}.jsonl.xz").read_bytes()).hexdigest()
            for n in ("train", "valid")
        },
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
