"""Cut a weighted prompt into CLIP's 77-token windows, as A1111's ``sd_hijack_clip`` does.

CLIP reads 77 tokens: BOS, 75 prompt tokens, EOS. Longer prompts are cut into 75-token chunks, each encoded
on its own and the results concatenated. The rules, from A1111's
``FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line``:

* ``BREAK`` closes the current chunk (padding it) and starts a new one.
* When a chunk is full and a comma was seen within the last ``comma_padding_backtrack`` tokens, the tokens
  after that comma move to the next chunk, so a phrase is not cut in two.
* A textual-inversion embedding is never split: if its vectors do not fit, the chunk is closed first. Its
  positions hold the placeholder token 0 and are listed in ``fixes`` for the encoder to overwrite.
* Each chunk is padded with EOS to 75, then wrapped as BOS + 75 + EOS. Multipliers follow each token;
  BOS, EOS and padding get 1.0.

Nothing here needs torch: the tokenizer and the embedding database come in as callables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from modules.engine.prompts.attention import is_break, parse_prompt_attention
from modules.engine.prompts.extra_networks import remove_extra_networks
from modules.engine.prompts.schedule import get_learned_conditioning_prompt_schedules, split_and
from modules.errors import UserError

CHUNK_LENGTH = 75
DEFAULT_COMMA_PADDING_BACKTRACK = 20
EMBEDDING_PLACEHOLDER_TOKEN = 0

Tokenize = Callable[[list[str]], list[list[int]]]
"""Token ids for each text, without BOS/EOS and without truncation (``tokenizer(texts,
add_special_tokens=False, truncation=False).input_ids``)."""


class EmbeddingMatch(NamedTuple):
    """A textual-inversion embedding whose trigger word starts at the looked-up position."""

    name: str
    vector_count: int  # positions it occupies in the chunk
    token_count: int  # prompt tokens its trigger word spans (A1111's embedding_length_in_tokens)


EmbeddingLookup = Callable[[Sequence[int], int], EmbeddingMatch | None]
"""``lookup(token_ids, offset)``: the embedding whose trigger starts at ``token_ids[offset]``, or None."""


class PromptChunkFix(NamedTuple):
    """Embedding ``embedding`` goes at ``offset``, counted from the first prompt token (BOS excluded,
    as A1111: the encoder writes its vectors at ``offset + 1`` of the 77-token sequence)."""

    offset: int
    embedding: str


@dataclass
class PromptChunk:
    """One 77-token window: ``tokens`` and ``multipliers`` have 77 entries, BOS and EOS included."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[PromptChunkFix] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkTokenizer:
    """What chunking needs to know about a CLIP tokenizer."""

    tokenize: Tokenize
    bos_token: int
    eos_token: int
    comma_token: int | None  # the id of ",</w>" for CLIP; None disables the comma backtrack


def prompt_token_limit(token_count: int) -> int:
    """Tokens the prompt can hold before it needs another chunk: 75, 150, 225..."""
    return math.ceil(max(token_count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


def token_count_label(token_count: int) -> str:
    """The counter shown next to the prompt box, as A1111 shows it: ``"12/75"``, ``"80/150"``."""
    return f"{token_count}/{prompt_token_limit(token_count)}"


class _ChunkBuilder:
    """Accumulates tokens into the current chunk; ``close`` pads it and starts the next."""

    def __init__(self, tokenizer: ChunkTokenizer) -> None:
        self.tokenizer = tokenizer
        self.chunks: list[PromptChunk] = []
        self.current = PromptChunk()
        self.token_count = 0
        self.last_comma = -1

    @property
    def length(self) -> int:
        return len(self.current.tokens)

    def close(self, is_last: bool = False) -> None:
        # A closed chunk counts as a full 75 towards the total (it uses a whole window); only the
        # trailing chunk counts its real length. This is the number A1111's counter shows.
        self.token_count += self.length if is_last else CHUNK_LENGTH
        chunk, pad = self.current, CHUNK_LENGTH - self.length
        bos, eos = self.tokenizer.bos_token, self.tokenizer.eos_token
        chunk.tokens = [bos, *chunk.tokens, *[eos] * pad, eos]
        chunk.multipliers = [1.0, *chunk.multipliers, *[1.0] * pad, 1.0]
        self.chunks.append(chunk)
        self.current = PromptChunk()
        self.last_comma = -1

    def backtrack_to_comma(self) -> None:
        """Move everything after the last comma into a new chunk."""
        cut = self.last_comma + 1
        old = self.current
        moved = PromptChunk(
            old.tokens[cut:],
            old.multipliers[cut:],
            # A1111 leaves the fixes of moved embeddings behind (pointing into padding); carrying them
            # along is the only way the moved embedding is still applied.
            [PromptChunkFix(fix.offset - cut, fix.embedding) for fix in old.fixes if fix.offset >= cut],
        )
        old.tokens, old.multipliers = old.tokens[:cut], old.multipliers[:cut]
        old.fixes = [fix for fix in old.fixes if fix.offset < cut]
        self.close()
        self.current = moved

    def add_embedding(self, match: EmbeddingMatch, weight: float) -> None:
        if match.vector_count > CHUNK_LENGTH:
            raise UserError(
                f"Embedding '{match.name}' has {match.vector_count} vectors; "
                f"at most {CHUNK_LENGTH} fit in a prompt chunk.",
                field="prompt",
            )
        if self.length + match.vector_count > CHUNK_LENGTH:
            self.close()
        self.current.fixes.append(PromptChunkFix(self.length, match.name))
        self.current.tokens.extend([EMBEDDING_PLACEHOLDER_TOKEN] * match.vector_count)
        self.current.multipliers.extend([weight] * match.vector_count)


def build_chunks(
    pieces: Sequence[tuple[str, float]],
    tokenizer: ChunkTokenizer,
    *,
    embedding_lookup: EmbeddingLookup | None = None,
    comma_padding_backtrack: int = DEFAULT_COMMA_PADDING_BACKTRACK,
) -> tuple[list[PromptChunk], int]:
    """Chunk weighted pieces (from :func:`parse_prompt_attention`) into 77-token windows.

    Returns:
        The chunks (at least one, even for an empty prompt) and the token count for
        :func:`token_count_label`.
    """
    builder = _ChunkBuilder(tokenizer)
    for ids, (text, weight) in zip(tokenizer.tokenize([text for text, _ in pieces]), pieces):
        if is_break((text, weight)):
            builder.close()
            continue
        position = 0
        while position < len(ids):
            token = ids[position]
            # The order of these checks is A1111's: a comma arriving on a full chunk is recorded, then the
            # close below forgets it, so that comma never triggers a backtrack.
            if token == tokenizer.comma_token:
                builder.last_comma = builder.length
            elif (
                comma_padding_backtrack != 0
                and builder.length == CHUNK_LENGTH
                and builder.last_comma != -1
                and builder.length - builder.last_comma <= comma_padding_backtrack
            ):
                builder.backtrack_to_comma()
            if builder.length == CHUNK_LENGTH:
                builder.close()

            match = embedding_lookup(ids, position) if embedding_lookup else None
            if match is None:
                builder.current.tokens.append(token)
                builder.current.multipliers.append(weight)
                position += 1
                continue
            if match.token_count < 1:
                raise ValueError(f"embedding lookup returned token_count={match.token_count} for '{match.name}'")
            builder.add_embedding(match, weight)
            position += match.token_count

    if builder.current.tokens or not builder.chunks:
        builder.close(is_last=True)
    return builder.chunks, builder.token_count


def tokenize_prompt(
    prompt: str,
    tokenizer: ChunkTokenizer,
    *,
    embedding_lookup: EmbeddingLookup | None = None,
    comma_padding_backtrack: int = DEFAULT_COMMA_PADDING_BACKTRACK,
    parse_emphasis: bool = True,
) -> tuple[list[PromptChunk], int]:
    """Parse emphasis and chunk one plain prompt (no editing syntax, no ``AND``, no extra-network tags).

    Args:
        parse_emphasis: False for A1111's emphasis mode "None": the text is tokenized as written, brackets
            and ``BREAK`` included, with every multiplier 1.0.
    """
    pieces = parse_prompt_attention(prompt) if parse_emphasis else [(prompt, 1.0)]
    return build_chunks(
        pieces, tokenizer, embedding_lookup=embedding_lookup, comma_padding_backtrack=comma_padding_backtrack
    )


def prompt_token_count(
    prompt: str,
    tokenizer: ChunkTokenizer,
    steps: int,
    *,
    is_negative: bool = False,
    embedding_lookup: EmbeddingLookup | None = None,
    comma_padding_backtrack: int = DEFAULT_COMMA_PADDING_BACKTRACK,
) -> int:
    """The number A1111's live counter shows for a full prompt: the longest of its scheduled sub-prompts.

    Extra-network tags are removed, a positive prompt is split on ``AND``, editing syntax is expanded for
    ``steps``, and the largest chunked token count wins. It never raises on a half-typed prompt: a bad
    emphasis weight is counted as plain text.
    """
    text = remove_extra_networks(prompt)
    parts = [text] if is_negative else [part for part, _ in split_and(text)]
    counts = []
    for schedule in get_learned_conditioning_prompt_schedules(parts, steps):
        for entry in schedule:
            for parse_emphasis in (True, False):
                try:
                    _, count = tokenize_prompt(
                        entry.prompt,
                        tokenizer,
                        embedding_lookup=embedding_lookup,
                        comma_padding_backtrack=comma_padding_backtrack,
                        parse_emphasis=parse_emphasis,
                    )
                except UserError:
                    continue  # a half-typed "(x:1.2.3)": count it as plain text instead
                counts.append(count)
                break
    return max(counts, default=0)
