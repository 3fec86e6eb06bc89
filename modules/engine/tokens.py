"""The prompt token counter (A1111's "n/75"), with the loaded checkpoint's tokenizer when there is one, else
the standard CLIP tokenizer built from the bundled BPE file (no model needs to be loaded to count)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modules.engine.prompts import ChunkTokenizer, prompt_token_count, token_count_label


class TokenCounter:
    def __init__(self, cache_dir: Path, loaded_tokenizer: Callable[[], Any]) -> None:
        self._cache_dir = cache_dir
        self._loaded_tokenizer = loaded_tokenizer
        self._fallback: Any = None
        self._lock = threading.Lock()

    def label(self, prompt: str, steps: int = 20, is_negative: bool = False) -> str:
        tokenizer = self._loaded_tokenizer() or self._standard()
        vocab = tokenizer.get_vocab()
        chunker = ChunkTokenizer(
            tokenize=lambda texts: tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"],
            bos_token=tokenizer.bos_token_id, eos_token=tokenizer.eos_token_id, comma_token=vocab.get(",</w>"))
        return token_count_label(prompt_token_count(prompt, chunker, max(1, steps), is_negative=is_negative))

    def _standard(self) -> Any:
        with self._lock:
            if self._fallback is None:
                from transformers import CLIPTokenizer

                from modules.engine.models.tokenizers import build_clip_tokenizer

                folder = build_clip_tokenizer(self._cache_dir / "tokenizers", "clip-pad-eot")
                self._fallback = CLIPTokenizer.from_pretrained(str(folder))
            return self._fallback
