"""CLIP tokenizer files for Stable Diffusion, built offline from open_clip's bundled BPE.

Every SD family tokenizes with the same 49,408-token CLIP BPE vocabulary. Committing the Hugging Face files for
it would add megabytes to the repo, and downloading them needs the hub, which these machines cannot reach. The
`open-clip-torch` wheel (a requirement anyway) ships the BPE merges as `bpe_simple_vocab_16e6.txt.gz`, and the
HF `vocab.json`/`merges.txt` pair can be derived from it exactly (deps.md §3): 512 byte symbols (plain and with
`</w>`), then one token per merge, then the two specials. The ids match open_clip's ViT-L-14 tokenizer.

Two variants differ only in the pad token: SD1.x and SDXL's first tokenizer pad with `<|endoftext|>`; SD2.x and
SDXL's `tokenizer_2` pad with `!` (id 0), as Stability's published tokenizers do.

Nothing here imports torch or transformers: the files are plain JSON and text.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

TokenizerVariant = Literal["clip-pad-eot", "clip-pad-bang"]

# Bump when the recipe below changes, so that caches built by an older version are not reused.
_RECIPE_VERSION = 1
_VOCAB_SIZE = 49408
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


def pad_token_for(variant: TokenizerVariant) -> str:
    """The pad token a variant uses: `<|endoftext|>` (SD1, SDXL) or `!` (SD2, SDXL's second tokenizer)."""
    return _EOS if variant == "clip-pad-eot" else "!"


def find_bpe_file() -> Path:
    """Locate open_clip's bundled BPE file without importing open_clip (its import takes ~10 s and pulls torch)."""
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / _BPE_FILE
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        f"open_clip's {_BPE_FILE} was not found; the CLIP tokenizer is built from it. "
        "Install the pinned requirements (open-clip-torch) and try again."
    )


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte → printable-character table that GPT-2 style byte-level BPE vocabularies use.

    Printable Latin-1 bytes stand for themselves; the rest are shifted above U+0100 in byte order, so that every
    byte has a visible symbol. The order of the result is the order of the first 256 vocabulary entries.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    # Insertion order matters: the printable bytes first, then the shifted ones in byte order.
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def _vocab_and_merges(bpe_file: Path) -> tuple[dict[str, int], list[str]]:
    """Derive the HF CLIP `vocab.json` mapping and the merge list from the gzipped open_clip BPE file."""
    lines = gzip.decompress(bpe_file.read_bytes()).decode("utf-8").split("\n")
    # Line 0 is a version header; CLIP uses the first 49,152 - 256 - 2 merges so that the vocabulary is 49,408.
    merges = lines[1 : _VOCAB_SIZE - 512 - 2 + 1]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [_BOS, _EOS]
    if len(tokens) != _VOCAB_SIZE:
        raise RuntimeError(f"{bpe_file} gave {len(tokens)} tokens, expected {_VOCAB_SIZE}; is it the CLIP BPE?")
    return {token: index for index, token in enumerate(tokens)}, merges


def _tokenizer_config(variant: TokenizerVariant) -> dict[str, object]:
    # model_max_length must be explicit: without it transformers uses 1e30 and prompt truncation breaks.
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": _BOS,
        "eos_token": _EOS,
        "unk_token": _EOS,
        "pad_token": pad_token_for(variant),
        "clean_up_tokenization_spaces": True,
    }


def _write_files(folder: Path, variant: TokenizerVariant, bpe_file: Path) -> None:
    vocab, merges = _vocab_and_merges(bpe_file)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = _tokenizer_config(variant)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    special = {key: config[key] for key in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def tokenizer_dir(tokenizers_dir: Path, variant: TokenizerVariant) -> Path:
    """Where `build_clip_tokenizer` puts a variant (the folder name carries the recipe version)."""
    return Path(tokenizers_dir) / f"{variant}-v{_RECIPE_VERSION}"


def build_clip_tokenizer(tokenizers_dir: Path, variant: TokenizerVariant = "clip-pad-eot") -> Path:
    """Build the HF CLIPTokenizer files for `variant` under `tokenizers_dir`, once, and return their folder.

    The folder holds `vocab.json`, `merges.txt`, `tokenizer_config.json` and `special_tokens_map.json`, which
    `CLIPTokenizer.from_pretrained(folder)` loads offline. It is written to a temporary folder and renamed into
    place, so a reader never sees half of it, and two processes racing to build it both end up with a whole one.

    Args:
        tokenizers_dir: A cache folder the caller owns (the app passes `<data>/cache/tokenizers`).
        variant: `"clip-pad-eot"` (SD1.x, SDXL `tokenizer`) or `"clip-pad-bang"` (SD2.x, SDXL `tokenizer_2`).
    """
    if variant not in ("clip-pad-eot", "clip-pad-bang"):
        raise ValueError(f"unknown tokenizer variant {variant!r}")
    target = tokenizer_dir(tokenizers_dir, variant)
    if (target / "special_tokens_map.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the renamed folder is an ordinary cache folder
        _write_files(staging, variant, find_bpe_file())
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished first (the target exists and is not empty): theirs is identical.
            if not (target / "special_tokens_map.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
