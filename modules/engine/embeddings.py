"""Textual-inversion embeddings from ``embeddings/``, the A1111 way: a file stem used in a prompt is a word.

How a job uses it::

    embeddings.load_for(pipe)                      # cheap when nothing changed on disk
    lookup = embeddings.lookup_for(tokenizer, encoder_dim)   # for tokenize_prompt(..., embedding_lookup=lookup)
    vectors = embeddings.vectors_for(encoder_dim)
    with inject_embeddings(text_encoder, [chunk.fixes], vectors):
        out = text_encoder(tokens, output_hidden_states=True)
    params["TI hashes"] = embeddings.ti_hashes_infotext(names_used(chunks))

File formats (A1111's ``load_from_file``):

* ``.pt``/``.bin`` from A1111's trainer: ``{"string_to_param": {"*": tensor(n, dim)}, "step", "sd_checkpoint",
  "sd_checkpoint_name", ...}``; diffusers/"concept" files: ``{"<token>": tensor(dim) or (n, dim)}``.
* ``.safetensors``: ``emb_params`` (kohya), a single tensor, or SDXL's ``clip_l`` + ``clip_g`` pair.

Pickles are opened with ``torch.load(weights_only=True)`` only: a file that wants to run code is refused, listed
under ``errors`` and never executed.

Which model an embedding fits is told by its width: 768 for SD1 (CLIP-L), 1024 for SD2 (OpenCLIP-H), and a
768 + 1280 pair for SDXL. An embedding that does not fit the loaded model is "skipped", as in A1111's
``/sdapi/v1/embeddings``. Text encoders are told apart by their width too: within one supported model the widths
differ, so ``encoder_dim`` picks both the encoder and the half of an SDXL pair that belongs to it.

Injection: transformers 5's ``CLIPTextModel.forward`` takes ``input_ids`` only (no ``inputs_embeds``), and needs
them anyway to find the EOS token for the pooled output. So, like A1111's ``EmbeddingsWithFixes``, the vectors are
written into the output of the encoder's token-embedding layer, by a forward hook registered for one call and
removed right after (:func:`inject_embeddings`); the model's code and weights are never changed.

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.prompts.chunks import EmbeddingLookup, EmbeddingMatch, PromptChunk, PromptChunkFix
from modules.errors import UserError

if TYPE_CHECKING:
    import torch

    from modules.model_registry import ModelFile, ModelRegistry

log = logging.getLogger(__name__)

KIND = "embeddings"
HASH_LENGTH = 12  # A1111's Embedding.shorthash: first 12 hex digits of the file's sha256
SDXL_KEYS = ("clip_l", "clip_g")


@dataclass(frozen=True)
class Embedding:
    """One textual-inversion embedding.

    Attributes:
        name: The word that triggers it: the file stem (A1111 ignores folders).
        filename: The file it came from.
        vectors: Its vectors by text-encoder width, each a float32 CPU tensor ``(vector_count, width)``; one entry,
            or two for an SDXL ``clip_l``/``clip_g`` pair.
        vector_count: How many prompt positions it takes.
        step, sd_checkpoint, sd_checkpoint_name: Training details A1111's trainer stores (None when absent).
    """

    name: str
    filename: Path
    vectors: Mapping[int, Any]
    vector_count: int
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def shape(self) -> int:
        """A1111's ``shape``: the width, or the sum of both widths for an SDXL pair."""
        return sum(self.vectors)

    def api_info(self) -> dict[str, Any]:
        """The entry of A1111's ``/sdapi/v1/embeddings`` for this embedding."""
        return {
            "step": self.step,
            "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name,
            "shape": self.shape,
            "vectors": self.vector_count,
        }


# -- reading files ---------------------------------------------------------------------------------------------


def load_embedding_file(path: Path, name: str | None = None) -> Embedding:
    """Read one embedding file in any format A1111 reads (see the module docstring).

    Raises:
        UserError: unreadable, a pickle that wants to run code, or not an embedding.
    """
    name = name or path.stem
    data = _read(path, name)
    vectors = _vectors(data, name)
    counts = {int(v.shape[0]) for v in vectors.values()}
    if len(counts) != 1:
        raise UserError(f"Embedding '{name}': its clip_l and clip_g parts have different vector counts {counts}.")
    return Embedding(
        name=name,
        filename=path,
        vectors=vectors,
        vector_count=counts.pop(),
        step=_int_or_none(data.get("step")),
        sd_checkpoint=_str_or_none(data.get("sd_checkpoint")),
        sd_checkpoint_name=_str_or_none(data.get("sd_checkpoint_name")),
    )


def _read(path: Path, name: str) -> dict[str, Any]:
    if path.suffix.lower() == ".safetensors":
        import safetensors.torch

        try:
            return dict(safetensors.torch.load_file(str(path), device="cpu"))
        except Exception as e:  # any safetensors failure means a damaged file
            raise UserError(f"Embedding '{name}' ({path.name}) is corrupt: {e}") from e
    from modules.engine.models.checkpoint_files import load_pickled_state_dict

    try:
        return load_pickled_state_dict(path)  # torch.load(weights_only=True): never runs code from the file
    except UserError as e:
        raise UserError(f"Embedding '{name}': {e.message}") from e


def _vectors(data: Mapping[str, Any], name: str) -> dict[int, Any]:
    """Vectors by width from A1111's, diffusers', kohya's or SDXL's layout."""
    import torch

    if "string_to_param" in data:
        params = data["string_to_param"]
        tensors = [v for v in params.values()] if isinstance(params, Mapping) else []
        if len(tensors) != 1:
            raise UserError(f"Embedding '{name}' has {len(tensors)} terms in string_to_param; expected 1.")
        return _by_width([tensors[0]], name)
    if all(key in data for key in SDXL_KEYS):
        return _by_width([data[key] for key in SDXL_KEYS], name)
    if "emb_params" in data:
        return _by_width([data["emb_params"]], name)
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return _by_width(tensors, name)  # diffusers: {"<token>": tensor}
    raise UserError(f"Embedding '{name}' is not a textual-inversion embedding "
                    f"({len(tensors)} tensors, e.g. {', '.join(list(data)[:3])}).")


def _by_width(tensors: list[Any], name: str) -> dict[int, Any]:
    import torch

    out: dict[int, Any] = {}
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.ndim not in (1, 2):
            raise UserError(f"Embedding '{name}' holds no (vectors, width) float tensor.")
        matrix = tensor.detach().reshape(1, -1) if tensor.ndim == 1 else tensor.detach()
        # clone: a memory-mapped file must not stay open (or change under us) while the vectors are used.
        out[int(matrix.shape[1])] = matrix.to(device="cpu", dtype=torch.float32).clone()
    return out


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- the database ----------------------------------------------------------------------------------------------


def encoder_dims(pipe: Any) -> tuple[int, ...]:
    """The widths of a pipeline's text encoders: ``(768,)`` for SD1, ``(768, 1280)`` for SDXL."""
    encoders = (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None))
    return tuple(int(te.config.hidden_size) for te in encoders if te is not None)


_FileKey = tuple[str, int, int]  # path, size, mtime_ns


class EmbeddingDatabase:
    """The embeddings in the registry's ``embeddings`` kind, sorted into loaded / skipped for the current model.

    Files are parsed once per (path, size, mtime); :meth:`load` rescans the folder when its mtime changed (A1111's
    rule) and is cheap otherwise, so it can run before every job. Thread-safe.
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._lock = threading.RLock()
        self._parsed: dict[_FileKey, Embedding | str] = {}  # an error message for files that failed
        self._files: dict[str, ModelFile] = {}
        self._loaded: dict[str, Embedding] = {}
        self._skipped: dict[str, Embedding] = {}
        self._errors: dict[str, str] = {}
        self._folder_mtimes: tuple[float, ...] | None = None

    @property
    def loaded(self) -> dict[str, Embedding]:
        """Embeddings that fit the model of the last :meth:`load`, by name, sorted case-insensitively."""
        with self._lock:
            return dict(self._loaded)

    @property
    def skipped(self) -> dict[str, Embedding]:
        """Embeddings made for another model (a different width)."""
        with self._lock:
            return dict(self._skipped)

    @property
    def errors(self) -> dict[str, str]:
        """Files that could not be read (corrupt, refused pickle, not an embedding), by name, with the reason."""
        with self._lock:
            return dict(self._errors)

    def load_for(self, pipe: Any) -> None:
        """:meth:`load` for the text encoders of ``pipe``."""
        self.load(encoder_dims(pipe))

    def load(self, dims: Sequence[int]) -> None:
        """Read new or changed files and sort every embedding into loaded / skipped for a model whose text
        encoders have the widths ``dims``. Unreadable files are logged and listed in :attr:`errors`."""
        wanted = set(dims)
        with self._lock:
            self._rescan_if_changed()
            files = self._unique_names(self._registry.list(KIND))
            paths = {str(model.filename) for model in files.values()}
            self._parsed = {key: value for key, value in self._parsed.items() if key[0] in paths}  # deleted files
            parsed = {name: self._parse(model) for name, model in files.items()}
            self._files = files
            self._errors = {name: p for name, p in parsed.items() if isinstance(p, str)}
            embeddings = sorted((p for p in parsed.values() if isinstance(p, Embedding)), key=lambda e: e.name.lower())
            self._loaded = {e.name: e for e in embeddings if set(e.vectors) == wanted}
            self._skipped = {e.name: e for e in embeddings if set(e.vectors) != wanted}

    def api_listing(self) -> dict[str, dict[str, dict[str, Any]]]:
        """A1111's ``/sdapi/v1/embeddings`` body: ``{"loaded": {name: info}, "skipped": {name: info}}``."""
        with self._lock:
            return {
                "loaded": {name: e.api_info() for name, e in self._loaded.items()},
                "skipped": {name: e.api_info() for name, e in self._skipped.items()},
            }

    def lookup_for(self, tokenizer: Any, encoder_dim: int) -> EmbeddingLookup:
        """The chunker's lookup for one text encoder: loaded embeddings with vectors of ``encoder_dim``, their names
        tokenized once with ``tokenizer`` (a Hugging Face CLIP tokenizer)."""
        with self._lock:
            counts = {name: e.vector_count for name, e in self._loaded.items() if encoder_dim in e.vectors}
        return build_lookup(tokenizer, counts)

    def vectors_for(self, encoder_dim: int) -> dict[str, Any]:
        """Name → ``(vector_count, encoder_dim)`` tensor for the loaded embeddings, for :func:`inject_embeddings`."""
        with self._lock:
            return {name: e.vectors[encoder_dim] for name, e in self._loaded.items() if encoder_dim in e.vectors}

    def ti_hashes_infotext(self, used_names: Iterable[str]) -> str | None:
        """A1111's "TI hashes" value, ``"name: 0123456789ab, other: ..."`` (first 12 hex of each file's sha256),
        in first-use order without repeats; None when there is nothing to write (no embedding used, or hashing
        off)."""
        parts: dict[str, None] = {}
        for name in used_names:
            with self._lock:
                model = self._files.get(name)
            sha = self._registry.sha256(model) if model is not None else None
            if sha:
                parts[f"{name.replace(':', '').replace(',', '')}: {sha[:HASH_LENGTH]}"] = None
        return ", ".join(parts) or None

    # -- internals ---------------------------------------------------------------------------------------------

    def _rescan_if_changed(self) -> None:
        mtimes = tuple(_mtime(folder) for folder in self._registry.kind(KIND).folders)
        if self._folder_mtimes is not None and mtimes != self._folder_mtimes:
            self._registry.refresh(KIND)
        self._folder_mtimes = mtimes

    @staticmethod
    def _unique_names(models: list[ModelFile]) -> dict[str, ModelFile]:
        """Name (file stem) → file; when two folders hold the same stem the first in name order wins."""
        files: dict[str, ModelFile] = {}
        for model in models:
            first = files.setdefault(model.basename, model)
            if first is not model:
                log.warning("embedding '%s': %s is hidden by %s", model.basename, model.filename, first.filename)
        return files

    def _parse(self, model: ModelFile) -> Embedding | str:
        try:
            st = model.filename.stat()
        except OSError as e:
            return f"cannot read {model.filename}: {e}"
        key = (str(model.filename), st.st_size, st.st_mtime_ns)
        cached = self._parsed.get(key)
        if cached is not None:
            return cached
        try:
            result: Embedding | str = load_embedding_file(model.filename, model.basename)
        except UserError as e:
            log.warning("embedding %s not loaded: %s", model.filename, e.message)
            result = e.message
        self._parsed = {k: v for k, v in self._parsed.items() if k[0] != key[0]}  # an older version of the file
        self._parsed[key] = result
        return result


def _mtime(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0


# -- prompt side: lookup and injection -------------------------------------------------------------------------


def build_lookup(tokenizer: Any, vector_counts: Mapping[str, int]) -> EmbeddingLookup:
    """An :data:`EmbeddingLookup` for embeddings ``name → vector count``, as A1111's ``find_embedding_at_position``:
    candidates are indexed by their first token, and the longest token sequence matching at the position wins."""
    names = list(vector_counts)
    token_ids = tokenizer(names, add_special_tokens=False)["input_ids"] if names else []
    index: dict[int, list[tuple[tuple[int, ...], EmbeddingMatch]]] = {}
    for name, ids in zip(names, token_ids, strict=True):
        if not ids:
            continue  # a name the tokenizer reduces to nothing can never be typed
        match = EmbeddingMatch(name, vector_counts[name], len(ids))
        index.setdefault(ids[0], []).append((tuple(ids), match))
    for candidates in index.values():
        candidates.sort(key=lambda item: len(item[0]), reverse=True)

    def lookup(tokens: Sequence[int], offset: int) -> EmbeddingMatch | None:
        for ids, match in index.get(tokens[offset], ()):
            if tuple(tokens[offset:offset + len(ids)]) == ids:
                return match
        return None

    return lookup


def names_used(chunks: Iterable[PromptChunk]) -> list[str]:
    """The embeddings a chunked prompt uses, in order of first use (for "TI hashes")."""
    return list(dict.fromkeys(fix.embedding for chunk in chunks for fix in chunk.fixes))


def token_embeddings_with_fixes(
    encoder: Any,
    tokens: torch.Tensor,
    fixes: Sequence[Sequence[PromptChunkFix]],
    vectors_by_name: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """The token embeddings of ``tokens`` (batch, 77) with each fix's vectors written at ``offset + 1``.

    This is what the encoder's first layer sees under :func:`inject_embeddings` (before position embeddings),
    for models that accept ``inputs_embeds`` and for checking the injection.
    """
    return with_fixes(encoder.get_input_embeddings()(tokens), fixes, vectors_by_name)


def with_fixes(
    embeds: torch.Tensor, fixes: Sequence[Sequence[PromptChunkFix]], vectors_by_name: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """A copy of ``embeds`` (batch, length, width) with row ``i``'s fixes written in; ``embeds`` if none.

    The offset counts from the first prompt token, so the vectors start at ``offset + 1`` (after BOS). Vectors that
    would run past the sequence are cut (the chunker never produces that).
    """
    if not any(fixes):
        return embeds
    if len(fixes) != embeds.shape[0]:
        raise ValueError(f"{len(fixes)} rows of embedding fixes for a batch of {embeds.shape[0]}")
    out = embeds.clone()
    for row, row_fixes in enumerate(fixes):
        for offset, name in row_fixes:
            if name not in vectors_by_name:
                raise ValueError(f"no vectors for embedding '{name}' at this encoder's width")
            vectors = vectors_by_name[name].to(device=out.device, dtype=out.dtype)
            start = offset + 1
            count = min(vectors.shape[0], out.shape[1] - start)
            out[row, start:start + count] = vectors[:count]
    return out


@contextmanager
def inject_embeddings(
    encoder: Any, fixes: Sequence[Sequence[PromptChunkFix]], vectors_by_name: Mapping[str, torch.Tensor]
) -> Iterator[None]:
    """While the block runs, calls of ``encoder`` put the embeddings' vectors at their fixes' positions.

    ``fixes`` has one list per batch row of the call (``[chunk.fixes]`` for one chunk). The hook sits on the
    token-embedding layer and is removed on exit, also after an exception; with no fixes nothing is hooked.
    """
    if not any(fixes):
        yield
        return

    def hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        return with_fixes(output, fixes, vectors_by_name)

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
