"""CLIP's tokenizer (Radford et al. 2021), read from a model folder's `tokenizer.json`.

The file (as `openai/clip-vit-base-patch16` ships it) carries CLIP's normalisation (NFC,
whitespace runs to one space, lower case), its pre-tokenizer regex and the byte-level BPE with
`</w>` word ends; the `tokenizers` library runs it. What CLIP's `tokenize()` adds is set here:
`<|startoftext|>` before and `<|endoftext|>` after every text, a context of 77 tokens, longer
texts cut to 76 tokens with the end token kept last, and padding with the end token (as
transformers' CLIP tokenizer pads; CLIP's own code pads with 0, which its causal text tower never
reads either). The lengths count real tokens, start and end included: the text mask is
`arange(77) < length`.
"""

from __future__ import annotations

import os

import numpy as np

from mango_jax.data.core import DataFormatError, DataNotFoundError

CONTEXT_LENGTH = 77
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def tokenizer_file(path: str) -> str:
    """`path` itself, or the `tokenizer.json` in the folder `path`."""
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise DataNotFoundError(
            f"no CLIP tokenizer at {file!r}: pass a model folder holding tokenizer.json (e.g. "
            "`hf download openai/clip-vit-base-patch16 --local-dir "
            "data/weights/clip-vit-base-patch16`, see data/weights/README.md) or the file.")
    return file


class ClipTokenizer:
    """`encode(texts) -> (ids [N, context] int32, lengths [N] int32)`."""

    def __init__(self, path: str, *, context_length: int = CONTEXT_LENGTH):
        import tokenizers

        self.path = tokenizer_file(path)
        try:
            tok = tokenizers.Tokenizer.from_file(self.path)
        except Exception as e:  # the library raises a bare Exception for a malformed file
            raise DataFormatError(f"{self.path!r} is not a tokenizers `tokenizer.json`: {e}") \
                from e
        model = tok.model
        ids = {t: tok.token_to_id(t) for t in (START_TOKEN, END_TOKEN)}
        if (not isinstance(model, tokenizers.models.BPE) or model.end_of_word_suffix != "</w>"
                or None in ids.values()):
            raise DataFormatError(
                f"{self.path!r} is not CLIP's tokenizer: expected a BPE model with '</w>' word "
                f"ends and the tokens {START_TOKEN} and {END_TOKEN} (found "
                f"{type(model).__name__}, tokens {ids}).")
        if context_length < 2:
            raise ValueError(f"context_length={context_length}: CLIP needs room for its start "
                             "and end tokens")
        self.start_id, self.end_id = ids[START_TOKEN], ids[END_TOKEN]
        self.pad_id = self.end_id
        self.context_length = int(context_length)
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        tok.post_processor = tokenizers.processors.TemplateProcessing(
            single=f"{START_TOKEN} $A {END_TOKEN}",
            special_tokens=[(START_TOKEN, self.start_id), (END_TOKEN, self.end_id)])
        tok.enable_truncation(max_length=self.context_length)
        tok.enable_padding(length=self.context_length, pad_id=self.pad_id, pad_token=END_TOKEN)
        self._tok = tok

    def encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
        encodings = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], np.int32).reshape(-1, self.context_length)
        lengths = np.asarray([sum(e.attention_mask) for e in encodings], np.int32)
        return ids, lengths

    def describe(self) -> dict:
        """What a prepared dataset records about the tokenizer that made its ids."""
        return {"kind": "clip", "file": os.path.abspath(self.path), "vocab_size": self.vocab_size,
                "context_length": self.context_length, "start_id": self.start_id,
                "end_id": self.end_id, "pad_id": self.pad_id}
