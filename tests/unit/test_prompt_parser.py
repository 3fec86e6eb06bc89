"""A1111 prompt syntax: editing schedules, AND, emphasis, BREAK, extra networks and 75-token chunking.

Expected values come from A1111's own doctests (``modules/prompt_parser.py``) and from running A1111's
lark grammar on the same inputs; no torch, no tokenizer download.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from modules.engine.prompts import (
    ChunkTokenizer,
    EmbeddingLookup,
    EmbeddingMatch,
    PromptChunkFix,
    build_chunks,
    extract_extra_networks,
    get_learned_conditioning_prompt_schedules,
    merge_repeats,
    parse_prompt_attention,
    prompt_at_step,
    prompt_schedule,
    prompt_token_count,
    prompt_token_limit,
    remove_extra_networks,
    split_and,
    token_count_label,
    tokenize_prompt,
)
from modules.errors import UserError


def schedule(prompt: str, steps: int = 10, hires_steps: int | None = None, old: bool = False) -> list[list[object]]:
    """The schedule as A1111's doctests print it: a list of [end_at_step, text] lists."""
    return [list(entry) for entry in prompt_schedule(prompt, steps, hires_steps, old)]


# --- prompt editing and alternation ----------------------------------------------------------------------

A1111_SCHEDULE_DOCTESTS = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[s, "a" if s % 2 else "(b:1.1)"] for s in range(1, 11)]),
    ("[fe|]male", [[s, "female" if s % 2 else "male"] for s in range(1, 11)]),
    ("[fe|||]male", [[s, "female" if s % 4 == 1 else "male"] for s in range(1, 11)]),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_SCHEDULE_DOCTESTS)
def test_a1111_schedule_doctests(prompt: str, expected: list[list[object]]) -> None:
    assert schedule(prompt) == expected


def test_a1111_stale_doctest_follows_the_grammar() -> None:
    # A1111's docstring claims "a [{b|d{:.5] c" is scheduled, but its grammar rejects "|" outside [..|..];
    # real lark returns the prompt unchanged, and so do we.
    assert schedule("a [{b|d{:.5] c") == [[10, "a [{b|d{:.5] c"]]


def test_a1111_header_example_with_100_steps() -> None:
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert schedule(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[cat:dog:5]", [[5, "cat"], [10, "dog"]]),  # absolute step
        ("[cat:dog:0.5]", [[5, "cat"], [10, "dog"]]),  # fraction of steps
        ("[cat:dog:0.55]", [[5, "cat"], [10, "dog"]]),  # int(5.5) == 5, A1111's rounding
        ("[cat:dog:0.99]", [[9, "cat"], [10, "dog"]]),
        ("[cat:dog:0.05]", [[10, "dog"]]),  # int(0.5) == 0: never before step 1
        ("[cat:dog:15]", [[10, "cat"]]),  # clamped to the step count: never switches
        ("[cat:dog:1.0]", [[10, "cat"]]),  # a "." means fraction: 1.0 is the whole run
        ("[cat:dog:1e1]", [[10, "cat"]]),  # lark's SIGNED_NUMBER, no "." so a step number
        ("[cat::3]", [[3, "cat"], [10, ""]]),
        ("[:3]", [[3, ""], [10, ""]]),
        ("a [b:c:3 ] d", [[3, "a b d"], [10, "a c d"]]),
        ("[a:b:c:1]", [[10, "[a:b:c:1]"]]),  # three colons: not an edit, literal text
        ("[a:b:x]", [[10, "[a:b:x]"]]),  # `when` is not a number
    ],
)
def test_when_forms_and_rounding(prompt: str, expected: list[list[object]]) -> None:
    assert schedule(prompt) == expected


def test_nested_editing_lists_every_switch_step() -> None:
    # The inner edit's step (5) is listed even though, at step 5, the outer one already shows "b".
    assert schedule("[a:[b:c:5]:2]", 10) == [[2, "a"], [5, "b"], [10, "c"]]
    # A1111 keeps repeated entries; merge=True drops them without changing what any step sees.
    assert schedule("[a:[b:2]:3]", 10) == [[2, "a"], [3, "a"], [10, "b"]]
    merged = prompt_schedule("[a:[b:2]:3]", 10, merge=True)
    assert [list(e) for e in merged] == [[3, "a"], [10, "b"]]


def test_alternation_inside_edit_and_merge() -> None:
    entries = prompt_schedule("[[a|b]:c:3]", 6)
    assert [list(e) for e in entries] == [[1, "a"], [2, "b"], [3, "a"], [4, "c"], [5, "c"], [6, "c"]]
    assert [list(e) for e in merge_repeats(entries)] == [[1, "a"], [2, "b"], [3, "a"], [6, "c"]]
    assert [prompt_at_step(entries, step) for step in range(6)] == [
        prompt_at_step(merge_repeats(entries), step) for step in range(6)
    ]


def test_alternation_and_editing_together() -> None:
    assert schedule("[a:[b:c:5]:2] [x|y]", 6) == [
        [1, "a x"],
        [2, "a y"],
        [3, "b x"],
        [4, "b y"],
        [5, "b x"],
        [6, "c y"],
    ]


def test_prompt_at_step_uses_a1111_zero_based_steps() -> None:
    entries = prompt_schedule("a [b:3]", 10)
    # A1111's denoiser counts from 0 and takes the first entry with step <= end_at_step.
    assert [prompt_at_step(entries, step) for step in range(10)] == ["a "] * 4 + ["a b"] * 6
    alternating = prompt_schedule("[x|y]", 5)
    assert [prompt_at_step(alternating, step) for step in range(5)] == ["x", "x", "y", "x", "y"]


@pytest.mark.parametrize("prompt", ["a | b", "(a|b)", "a [b:3] c\\", "a [b|c:2]"])
def test_prompts_outside_the_grammar_are_used_unchanged(prompt: str) -> None:
    assert schedule(prompt) == [[10, prompt]]


def test_escaped_brackets_are_kept_for_the_emphasis_parser() -> None:
    assert schedule(r"a \[b:3\] (c)") == [[10, r"a \[b:3\] (c)"]]


def test_hires_fix_uses_the_current_a1111_timeline() -> None:
    # First pass of 20 steps, hires pass of 10: "." = fraction of both passes, integers count from the
    # start of the first pass (A1111 doctests: `get_learned_conditioning_prompt_schedules([p], 10, 10)`).
    assert schedule("a [b:.5] c", 10, 10) == [[10, "a b c"]]
    assert schedule("a [b:1.5] c", 10, 10) == [[5, "a  c"], [10, "a b c"]]
    assert schedule("[a:b:25]", 20, 10) == [[5, "a"], [10, "b"]]
    assert schedule("[a:b:5]", 20, 10) == [[10, "b"]]
    assert schedule("[a:b:1.5]", 10) == [[10, "a"]]  # first pass: 1.5 of the run never switches


def test_old_scheduling_option() -> None:
    # "Use old prompt editing timelines": < 1 is a fraction, anything else a step number, hires or not.
    assert schedule("[a:b:1.5]", 10, old=True) == [[1, "a"], [10, "b"]]
    assert schedule("[a:b:0.5]", 20, 10, old=True) == [[10, "a"], [20, "b"]]
    assert schedule("a [b:c:1.0] d", 10, old=True) == [[1, "a b d"], [10, "a c d"]]


def test_batch_schedules_keep_order_and_duplicates() -> None:
    result = get_learned_conditioning_prompt_schedules(["a [b:2]", "c", "a [b:2]"], 4)
    assert [[list(e) for e in s] for s in result] == [[[2, "a "], [4, "a b"]], [[4, "c"]], [[2, "a "], [4, "a b"]]]
    result[0].clear()  # each prompt gets its own list, even when cached
    assert result[2]


def test_deep_nesting_does_not_crash() -> None:
    prompt = "(" * 2000 + "x" + ")" * 2000 + " [a:b:2]"
    entries = prompt_schedule(prompt, 4)
    assert entries[-1].end_at_step == 4


# --- AND ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),  # leading space kept, trailing dropped
        ("a cat :1.2 AND a dog:-0.5", [("a cat", 1.2), (" a dog", -0.5)]),
        ("a AND b:.5 AND c: 2.", [("a", 1.0), (" b", 0.5), (" c", 2.0)]),
        ("ANDROID AND x", [("ANDROID", 1.0), (" x", 1.0)]),  # whole word only
        ("(a:1.3)", [("(a:1.3)", 1.0)]),  # emphasis is not an AND weight
        ("a\nb:2", [("a\nb", 2.0)]),
    ],
)
def test_split_and(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(prompt) == expected


# --- emphasis ----------------------------------------------------------------------------------------------

A1111_ATTENTION_DOCTESTS = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_ATTENTION_DOCTESTS)
def test_a1111_attention_doctests(prompt: str, expected: list[tuple[str, float]]) -> None:
    # Exact float equality on purpose: the weights must match A1111 to the last bit.
    assert parse_prompt_attention(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", [("", 1.0)]),
        ("((x))", [("x", 1.1 * 1.1)]),
        ("[x]", [("x", 1 / 1.1)]),
        ("[[x]]", [("x", (1 / 1.1) * (1 / 1.1))]),
        ("(x:1.5)", [("x", 1.5)]),
        ("( x : 0.25 )", [(" x ", 0.25)]),
        ("(x:-1)", [("x", -1.0)]),
        ("[x", [("x", 1 / 1.1)]),
        ("(a [b", [("a ", 1.1), ("b", 1.1 * (1 / 1.1))]),  # open round brackets apply before square ones
        ("a) b]", [("a) b]", 1.0)]),  # closers with nothing to close are text
        ("a:1.2) b", [("a:1.2) b", 1.0)]),
        ("[x:1.5)", [("x:1.5)", 1 / 1.1)]),
        (r"\\ \( \)", [("\\ ( )", 1.0)]),
        (r"a\b", [("ab", 1.0)]),  # a backslash before an ordinary character is dropped, as in A1111
        ("(a:1.1)b(c)", [("a", 1.1), ("b", 1.0), ("c", 1.1)]),
        ("(a)(b:1.1)", [("ab", 1.1)]),  # equal neighbours merge
    ],
)
def test_emphasis_forms(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(prompt) == expected


def test_bad_emphasis_weight_is_a_user_error() -> None:
    with pytest.raises(UserError, match="1.2.3"):
        parse_prompt_attention("(x:1.2.3)")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
        ("a, BREAK, b", [("a,", 1.0), ("BREAK", -1), (", b", 1.0)]),
        ("BREAK a", [("", 1.0), ("BREAK", -1), ("a", 1.0)]),
        ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1), ("", 1.0), ("BREAK", -1), ("b", 1.0)]),
        ("BREAKFAST and BREAK_x", [("BREAKFAST and BREAK_x", 1.0)]),  # not a standalone word
        ("(a) BREAK (b)", [("a", 1.1), ("", 1.0), ("BREAK", -1), ("", 1.0), ("b", 1.1)]),
        # Emphasis around BREAK scales the marker, which then stops being a break (A1111 quirk).
        ("(BREAK)", [("", 1.1), ("BREAK", -1.1), ("", 1.1)]),
    ],
)
def test_break_markers(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(prompt) == expected


# --- extra networks ---------------------------------------------------------------------------------------


def test_lora_positional_forms() -> None:
    text, nets = extract_extra_networks("a <lora:foo> b <lora:bar:0.5> <lora:baz:0.5:0.8> <lora:dyn:1:1:16>")
    assert text == "a  b   "
    assert [(n.kind, n.name, n.te_multiplier, n.unet_multiplier, n.dyn_dim) for n in nets] == [
        ("lora", "foo", 1.0, 1.0, None),
        ("lora", "bar", 0.5, 0.5, None),  # unet defaults to te
        ("lora", "baz", 0.5, 0.8, None),
        ("lora", "dyn", 1.0, 1.0, 16),
    ]
    assert nets[2].args == ["0.5", "0.8"]
    assert nets[2].tag == "<lora:baz:0.5:0.8>"


def test_lora_named_arguments() -> None:
    _, nets = extract_extra_networks("<lora:a:te=0.3> <lora:b:0.7:unet=0.2> <lora:c:dyn=8:unet=0> <lora:d:0.1:te=0.9>")
    assert [(n.name, n.te_multiplier, n.unet_multiplier, n.dyn_dim) for n in nets] == [
        ("a", 0.3, 0.3, None),
        ("b", 0.7, 0.2, None),
        ("c", 1.0, 0.0, 8),
        ("d", 0.9, 0.9, None),  # named te overrides positional te, and unet follows it
    ]
    assert nets[1].named == {"unet": "0.2"}


def test_lyco_alias_hypernet_and_other_kinds() -> None:
    text, nets = extract_extra_networks("x<lyco:l:0.4><hypernet:h:0.6><hypernet:plain><custom:name:a:b=c>y")
    assert text == "xy"
    assert (nets[0].kind, nets[0].name, nets[0].te_multiplier) == ("lyco", "l", 0.4)
    assert (nets[1].kind, nets[1].name, nets[1].te_multiplier, nets[1].unet_multiplier) == ("hypernet", "h", 0.6, 0.6)
    assert nets[2].te_multiplier == 1.0
    other = nets[3]
    assert (other.kind, other.name, other.args, other.named) == ("custom", "name", ["a", "b=c"], {"b": "c"})


def test_text_that_is_not_a_tag_is_left_alone() -> None:
    prompt = "a <not a tag> <lora:> <:x> <lo-ra:x> b"
    assert extract_extra_networks(prompt) == (prompt, [])


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("<lora:foo:abc>", "<lora:foo:abc>"),
        ("<lora:foo:1:x>", "unet"),
        ("<lora:foo:te=nan>", "te"),
        ("<lora:foo:1:1:1.5>", "dyn"),
        ("<lora:foo:dyn=big>", "dyn"),
        ("<lora:te=1>", "no LoRA name"),
        ("<hypernet:h:lots>", "<hypernet:h:lots>"),
    ],
)
def test_bad_extra_network_values_raise_user_errors(prompt: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as caught:
        extract_extra_networks(prompt)
    assert caught.value.field == "prompt"


def test_remove_extra_networks_never_parses() -> None:
    assert remove_extra_networks("a <lora:foo:abc> b") == "a  b"


# --- chunking ---------------------------------------------------------------------------------------------

BOS, EOS = 49406, 49407


class FakeVocab:
    """One token per word, commas as their own token; ids are handed out on first sight."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {",": 267}

    def id(self, word: str) -> int:
        return self.ids.setdefault(word, 1000 + len(self.ids))

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[self.id(word) for word in text.replace(",", " , ").split()] for text in texts]

    def spec(self) -> ChunkTokenizer:
        return ChunkTokenizer(self.tokenize, BOS, EOS, self.ids[","])


def words(count: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(count))


def body(chunk_tokens: Sequence[int]) -> list[int]:
    """The prompt tokens of a chunk: BOS/EOS and padding removed."""
    assert chunk_tokens[0] == BOS and chunk_tokens[-1] == EOS
    return [t for t in chunk_tokens[1:-1] if t != EOS]


def test_empty_prompt_is_one_padded_chunk() -> None:
    chunks, count = tokenize_prompt("", FakeVocab().spec())
    assert count == 0
    assert len(chunks) == 1
    assert chunks[0].tokens == [BOS] + [EOS] * 76
    assert chunks[0].multipliers == [1.0] * 77
    assert token_count_label(count) == "0/75"


def test_multipliers_follow_tokens() -> None:
    vocab = FakeVocab()
    chunks, count = tokenize_prompt("a (b c:1.5) [d]", vocab.spec())
    assert count == 4
    assert body(chunks[0].tokens) == [vocab.id(w) for w in "a b c d".split()]
    assert chunks[0].multipliers[:6] == [1.0, 1.0, 1.5, 1.5, 1 / 1.1, 1.0]
    assert len(chunks[0].tokens) == len(chunks[0].multipliers) == 77


@pytest.mark.parametrize(("count", "chunk_count", "label"), [(75, 1, "75/75"), (76, 2, "76/150"), (150, 2, "150/150")])
def test_long_prompts_take_more_chunks(count: int, chunk_count: int, label: str) -> None:
    chunks, total = tokenize_prompt(words(count), FakeVocab().spec())
    assert (len(chunks), total, token_count_label(total)) == (chunk_count, count, label)
    assert all(len(c.tokens) == 77 for c in chunks)


def test_break_starts_a_new_chunk_and_counts_a_full_window() -> None:
    vocab = FakeVocab()
    chunks, count = tokenize_prompt("a b BREAK c", vocab.spec())
    assert [body(c.tokens) for c in chunks] == [[vocab.id("a"), vocab.id("b")], [vocab.id("c")]]
    assert count == 76  # the first chunk counts as 75, as in A1111's counter
    assert token_count_label(count) == "76/150"
    # A trailing BREAK closes the chunk and opens nothing.
    chunks, count = tokenize_prompt("a BREAK", vocab.spec())
    assert (len(chunks), count) == (1, 75)


def test_comma_backtrack_moves_the_last_phrase_to_the_next_chunk() -> None:
    vocab = FakeVocab()
    prompt = words(70) + ", " + words(10, "t")  # comma at position 70; the chunk fills at 75
    chunks, count = tokenize_prompt(prompt, vocab.spec())
    assert len(chunks) == 2
    assert body(chunks[0].tokens) == [vocab.id(f"w{i}") for i in range(70)] + [vocab.ids[","]]
    assert body(chunks[1].tokens) == [vocab.id(f"t{i}") for i in range(10)]
    assert count == 75 + 10


def test_comma_too_far_back_or_backtrack_disabled_cuts_at_75() -> None:
    vocab = FakeVocab()
    far = words(50) + ", " + words(40, "t")  # 25 tokens after the comma > 20
    first, _ = tokenize_prompt(far, vocab.spec())
    assert len(body(first[0].tokens)) == 75
    near = words(70) + ", " + words(10, "t")
    disabled, _ = tokenize_prompt(near, vocab.spec(), comma_padding_backtrack=0)
    assert len(body(disabled[0].tokens)) == 75
    wider, _ = tokenize_prompt(far, vocab.spec(), comma_padding_backtrack=30)
    assert len(body(wider[0].tokens)) == 51


def test_comma_exactly_at_the_boundary_is_forgotten() -> None:
    # A1111 records the comma, then closes the full chunk, which resets the comma position: no backtrack.
    vocab = FakeVocab()
    chunks, _ = tokenize_prompt(words(75) + ", " + words(80, "t"), vocab.spec())
    assert body(chunks[1].tokens)[0] == vocab.ids[","]
    assert len(body(chunks[1].tokens)) == 75


def lookup_for(vocab: FakeVocab, embeddings: dict[tuple[str, ...], int]) -> EmbeddingLookup:
    """An embedding lookup for trigger words (one or more words) with a vector count each."""
    table = {tuple(vocab.id(w) for w in trigger): (" ".join(trigger), n) for trigger, n in embeddings.items()}

    def lookup(ids: Sequence[int], offset: int) -> EmbeddingMatch | None:
        for trigger, (name, vectors) in table.items():
            if tuple(ids[offset : offset + len(trigger)]) == trigger:
                return EmbeddingMatch(name, vectors, len(trigger))
        return None

    return lookup


def test_embedding_occupies_its_vectors_and_is_recorded_as_a_fix() -> None:
    vocab = FakeVocab()
    lookup = lookup_for(vocab, {("style",): 4, ("two", "words"): 2})
    chunks, count = tokenize_prompt("a (style) two words b", vocab.spec(), embedding_lookup=lookup)
    assert count == 1 + 4 + 2 + 1
    chunk = chunks[0]
    assert chunk.tokens[1:10] == [vocab.id("a"), 0, 0, 0, 0, 0, 0, vocab.id("b"), EOS]
    assert chunk.multipliers[1:9] == [1.0, 1.1, 1.1, 1.1, 1.1, 1.0, 1.0, 1.0]
    assert chunk.fixes == [PromptChunkFix(1, "style"), PromptChunkFix(5, "two words")]


def test_embedding_is_never_split_across_chunks() -> None:
    vocab = FakeVocab()
    lookup = lookup_for(vocab, {("style",): 8})
    chunks, count = tokenize_prompt(words(70) + " style end", vocab.spec(), embedding_lookup=lookup)
    assert len(chunks) == 2
    assert len(body(chunks[0].tokens)) == 70  # the 8 vectors did not fit in the 5 places left
    assert chunks[0].fixes == []
    assert chunks[1].fixes == [PromptChunkFix(0, "style")]
    assert chunks[1].tokens[1:10] == [0] * 8 + [vocab.id("end")]
    assert count == 75 + 9


def test_embedding_moved_by_comma_backtrack_keeps_its_fix() -> None:
    # A1111 leaves this fix behind in the first chunk, pointing at padding; we move it with its vectors.
    vocab = FakeVocab()
    lookup = lookup_for(vocab, {("style",): 3})
    chunks, _ = tokenize_prompt(words(65) + ", style " + words(10, "t"), vocab.spec(), embedding_lookup=lookup)
    assert chunks[0].fixes == []
    assert chunks[1].fixes == [PromptChunkFix(0, "style")]
    assert chunks[1].tokens[1:4] == [0, 0, 0]


def test_oversized_embedding_is_a_user_error() -> None:
    vocab = FakeVocab()
    with pytest.raises(UserError, match="huge"):
        tokenize_prompt("huge", vocab.spec(), embedding_lookup=lookup_for(vocab, {("huge",): 80}))


def test_emphasis_none_keeps_brackets_and_break_as_text() -> None:
    vocab = FakeVocab()
    chunks, count = tokenize_prompt("(a) BREAK b", vocab.spec(), parse_emphasis=False)
    assert count == 3
    assert body(chunks[0].tokens) == [vocab.id("(a)"), vocab.id("BREAK"), vocab.id("b")]


def test_build_chunks_accepts_parsed_pieces() -> None:
    vocab = FakeVocab()
    chunks, count = build_chunks([("a", 1.0), ("BREAK", -1.0), ("b", 2.0)], vocab.spec())
    assert count == 76
    assert chunks[1].multipliers[1] == 2.0


@pytest.mark.parametrize(("count", "limit"), [(0, 75), (1, 75), (75, 75), (76, 150), (151, 225)])
def test_token_limits(count: int, limit: int) -> None:
    assert prompt_token_limit(count) == limit
    assert token_count_label(count) == f"{count}/{limit}"


def test_prompt_token_count_takes_the_longest_scheduled_sub_prompt() -> None:
    vocab = FakeVocab()
    prompt = f"<lora:foo:0.5> {words(3)} [{words(80, 'x')}::5] AND {words(10, 'y')}:0.5"
    assert prompt_token_count(prompt, vocab.spec(), steps=20) == 83
    # A negative prompt is not split on AND: the whole text counts.
    assert prompt_token_count("a AND b", vocab.spec(), steps=20, is_negative=True) == 3
    # A half-typed weight does not break the counter.
    assert prompt_token_count("(a b:1.2.3)", vocab.spec(), steps=20) == 2
