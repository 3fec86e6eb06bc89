"""Prompts to text-encoder conditioning, the A1111 way.

Each prompt is cut into 77-token chunks (modules.engine.prompts), each chunk is encoded on its own, the
per-token emphasis multipliers are applied with A1111's "Original" mean restore, and the chunks are
concatenated. SDXL runs both text encoders and adds the pooled embedding. Prompt editing and alternation give
one conditioning per distinct scheduled prompt; the sampler switches between them step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.engine.embeddings import EmbeddingDatabase, inject_embeddings, names_used
from modules.engine.prompts import ChunkTokenizer, PromptChunk, prompt_schedule, split_and, tokenize_prompt
from modules.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass
class Conditioning:
    """Text conditioning for one prompt: (1, 77*k, dim), plus SDXL's pooled (1, dim2)."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None


@dataclass
class ScheduledConditioning:
    """Conditioning per step range: an entry applies while the 0-based step is <= its end step (A1111)."""

    entries: list[tuple[int, Conditioning]]

    def at_step(self, step: int) -> Conditioning:
        for end, cond in self.entries:
            if step <= end:
                return cond
        return self.entries[0][1]  # past the end: the first entry, as A1111's reconstruct_cond_batch


class PromptEncoder:
    """Encodes prompts with a pipeline's tokenizer(s) and text encoder(s)."""

    def __init__(self, pipe: Any, clip_skip: int = 1, embeddings: EmbeddingDatabase | None = None) -> None:
        self.pipe = pipe
        self.clip_skip = clip_skip
        self.embeddings = embeddings
        self.used_embeddings: set[str] = set()  # for the infotext's "TI hashes"
        if embeddings is not None:
            embeddings.load_for(pipe)
        self.is_sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self._encoders = [(pipe.tokenizer, pipe.text_encoder)] if pipe.text_encoder is not None else []
        if self.is_sdxl:
            self._encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
        if not self._encoders:
            raise UserError("this checkpoint has no text encoder, so it cannot take a prompt")
        # Clip skip reads hidden_states[-clip_skip] (SDXL: one further back); past the encoder's depth that was an
        # IndexError and a 500. A request valid for SD's 12 layers is a user error on a shallower encoder.
        layers = min(getattr(e.config, "num_hidden_layers", clip_skip) for _, e in self._encoders)
        if clip_skip > layers:
            raise UserError(f"clip skip {clip_skip} is more than the {layers} layers of this checkpoint's text "
                            "encoder", field="clip_skip")
        self._empty: Conditioning | None = None

    def schedule(self, prompt: str, steps: int) -> ScheduledConditioning:
        """Conditioning for each step range of a prompt with editing or alternation syntax."""
        if len(split_and(prompt)) > 1:
            raise UserError("'AND' (composable prompts) is not supported yet; write the prompt without it, or "
                            "use lowercase 'and'", field="prompt")
        encoded: dict[str, Conditioning] = {}  # alternation repeats the same few prompts many times
        entries = []
        for entry in prompt_schedule(prompt, steps, merge=True):
            if entry.prompt not in encoded:
                encoded[entry.prompt] = self.encode(entry.prompt)
            entries.append((entry.end_at_step, encoded[entry.prompt]))
        return ScheduledConditioning(entries)

    def encode(self, prompt: str) -> Conditioning:
        import torch

        parts, pooled = [], None
        for index, (tokenizer, encoder) in enumerate(self._encoders):
            dim = encoder.config.hidden_size
            lookup = self.embeddings.lookup_for(tokenizer, dim) if self.embeddings else None
            chunks, _ = tokenize_prompt(prompt, _chunk_tokenizer(tokenizer), embedding_lookup=lookup)
            self.used_embeddings.update(names_used(chunks))
            vectors = self.embeddings.vectors_for(dim) if self.embeddings else {}
            hidden = [self._encode_chunk(encoder, chunk, sdxl_index=index if self.is_sdxl else None,
                                         vectors=vectors) for chunk in chunks]
            parts.append(torch.cat([h for h, _ in hidden], dim=1))
            if self.is_sdxl and index == 1:
                pooled = hidden[0][1]  # A1111 takes the pooled output of the first chunk
        return Conditioning(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0], pooled)

    def empty(self) -> Conditioning:
        if self._empty is None:
            self._empty = self.encode("")
        return self._empty

    def _encode_chunk(self, encoder: Any, chunk: PromptChunk, sdxl_index: int | None,
                      vectors: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        device = encoder.device
        tokens = torch.tensor([chunk.tokens], device=device)
        with inject_embeddings(encoder, [chunk.fixes], vectors):  # textual inversion vectors at their positions
            out = encoder(tokens, output_hidden_states=True)
        if sdxl_index is not None:
            # SDXL conditions on the penultimate layer of both encoders, without the final norm.
            z = out.hidden_states[-(self.clip_skip + 1)]
            pooled = out[0] if sdxl_index == 1 else None
        elif self.clip_skip > 1:
            z = _final_layer_norm(encoder)(out.hidden_states[-self.clip_skip])
            pooled = None
        else:
            z, pooled = out.last_hidden_state, None
        multipliers = torch.tensor(chunk.multipliers, device=device, dtype=z.dtype).reshape(1, -1, 1)
        original_mean = z.mean()
        z = z * multipliers
        new_mean = z.mean()
        # A1111's mean restore; skipped when the weighted mean is ~0, where the ratio would blow up to inf/NaN.
        if new_mean.abs() > 1e-6 * max(1.0, float(original_mean.abs())):
            z = z * (original_mean / new_mean)
        return z, pooled


def padded(schedules: Sequence[ScheduledConditioning], empty: Conditioning) -> list[ScheduledConditioning]:
    """Pad every conditioning to the same number of chunks with empty-prompt chunks, so the positive and
    negative sides batch together for CFG and can switch at any step (A1111's pad_cond)."""
    chunks = max(c.embeds.shape[1] // 77 for s in schedules for _, c in s.entries)
    return [ScheduledConditioning([(end, _pad_to(c, chunks, empty)) for end, c in s.entries]) for s in schedules]


def _pad_to(c: Conditioning, chunks: int, empty: Conditioning) -> Conditioning:
    import torch

    missing = chunks - c.embeds.shape[1] // 77
    if missing <= 0:
        return c
    return Conditioning(torch.cat([c.embeds, *([empty.embeds] * missing)], dim=1), c.pooled)


def _final_layer_norm(encoder: Any) -> Any:
    # transformers 5 flattened CLIPTextModel (no .text_model); older versions nest it.
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def _chunk_tokenizer(tokenizer: Any) -> ChunkTokenizer:
    vocab = tokenizer.get_vocab()
    return ChunkTokenizer(
        tokenize=lambda texts: tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"],
        bos_token=tokenizer.bos_token_id,
        eos_token=tokenizer.eos_token_id,
        comma_token=vocab.get(",</w>"),
    )
