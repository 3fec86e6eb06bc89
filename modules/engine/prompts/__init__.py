"""Prompt syntax compatible with AUTOMATIC1111's webui: pure Python, no torch.

The order A1111 applies the layers in, and the module for each:

1. :mod:`.extra_networks` -- remove ``<lora:name:0.8>`` tags and parse them.
2. :func:`.schedule.split_and` -- split ``a AND b:0.5`` into weighted sub-prompts.
3. :mod:`.schedule` -- expand ``[from:to:when]`` and ``[a|b]`` into a prompt per sampling step.
4. :mod:`.attention` -- read ``(x:1.2)`` / ``[x]`` / ``BREAK`` into weighted pieces.
5. :mod:`.chunks` -- tokenize and cut into 77-token windows with per-token multipliers.
"""

from modules.engine.prompts.attention import is_break, parse_prompt_attention
from modules.engine.prompts.chunks import (
    ChunkTokenizer,
    EmbeddingLookup,
    EmbeddingMatch,
    PromptChunk,
    PromptChunkFix,
    build_chunks,
    prompt_token_count,
    prompt_token_limit,
    token_count_label,
    tokenize_prompt,
)
from modules.engine.prompts.extra_networks import ExtraNetwork, extract_extra_networks, remove_extra_networks
from modules.engine.prompts.schedule import (
    ScheduledPrompt,
    get_learned_conditioning_prompt_schedules,
    merge_repeats,
    prompt_at_step,
    prompt_schedule,
    split_and,
)

__all__ = [
    "ChunkTokenizer",
    "EmbeddingLookup",
    "EmbeddingMatch",
    "ExtraNetwork",
    "PromptChunk",
    "PromptChunkFix",
    "ScheduledPrompt",
    "build_chunks",
    "extract_extra_networks",
    "get_learned_conditioning_prompt_schedules",
    "is_break",
    "merge_repeats",
    "parse_prompt_attention",
    "prompt_at_step",
    "prompt_schedule",
    "prompt_token_count",
    "prompt_token_limit",
    "remove_extra_networks",
    "split_and",
    "token_count_label",
    "tokenize_prompt",
]
