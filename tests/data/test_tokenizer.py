"""CLIP's tokenizer against transformers' CLIPTokenizer (ids committed by
make_tokenizer_fixture.py, so the test needs no transformers)."""

import json
import os

import numpy as np
import pytest

from mango_jax.data.core import DataFormatError, DataNotFoundError
from mango_jax.data.tokenizer import CONTEXT_LENGTH, ClipTokenizer

FIXTURE = os.path.join(os.path.dirname(__file__), "clip_tokenizer")


def reference():
    with open(os.path.join(FIXTURE, "reference.json"), encoding="utf-8") as f:
        return json.load(f)


def test_ids_and_lengths_equal_transformers_clip_tokenizer():
    ref = reference()
    tok = ClipTokenizer(FIXTURE)
    ids, lengths = tok.encode(ref["texts"])
    np.testing.assert_array_equal(ids, np.asarray(ref["ids"], np.int32))
    np.testing.assert_array_equal(lengths, ref["lengths"])
    assert ids.shape == (len(ref["texts"]), CONTEXT_LENGTH) and ids.dtype == np.int32
    # CLIP's layout: start first, end at length - 1 (kept last when truncated), end as padding.
    assert (ids[:, 0] == tok.start_id).all()
    assert (ids[np.arange(len(ids)), lengths - 1] == tok.end_id).all()
    assert max(lengths) == CONTEXT_LENGTH and min(lengths) == 2  # truncated and empty texts
    pad = np.arange(CONTEXT_LENGTH)[None] >= lengths[:, None]
    assert (ids[pad] == tok.pad_id).all() and tok.pad_id == tok.end_id


def test_start_and_end_tokens_without_the_files_post_processor(tmp_path):
    with open(os.path.join(FIXTURE, "tokenizer.json"), encoding="utf-8") as f:
        data = json.load(f)
    data["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    ref = reference()
    ids, lengths = ClipTokenizer(str(tmp_path / "tokenizer.json")).encode(ref["texts"])
    np.testing.assert_array_equal(ids, ref["ids"])
    np.testing.assert_array_equal(lengths, ref["lengths"])


def test_refuses_missing_and_non_clip_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="hf download openai/clip-vit-base-patch16"):
        ClipTokenizer(str(tmp_path))
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer.json"))
    with pytest.raises(DataFormatError, match="not CLIP's tokenizer"):
        ClipTokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataFormatError, match="is not a tokenizers"):
        ClipTokenizer(str(tmp_path))
