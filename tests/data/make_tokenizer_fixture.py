"""Writes tests/data/clip_tokenizer/: a small CLIP-style `tokenizer.json` and reference ids.

    /work/main/.venv/bin/python tests/data/make_tokenizer_fixture.py   # needs transformers

The BPE is trained here with the `tokenizers` trainers (CLIP's normaliser, pre-tokenizer regex
and `</w>` word ends, a 600-token vocabulary) on a few sentences; transformers' `CLIPTokenizer`
is built from that vocabulary and merge list, saves the model folder's `tokenizer.json` as the
hub's CLIP folders hold it, and encodes the test texts (77 tokens, truncated, padded) into
`reference.json`. `make test` reads the committed files and needs no transformers.
"""

from __future__ import annotations

import json
import os
import tempfile

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip_tokenizer")
START, END = "<|startoftext|>", "<|endoftext|>"
CORPUS = [
    "A young woman moves to the city and falls in love with a jazz musician.",
    "Two detectives hunt a serial killer through the rain-soaked streets of Los Angeles.",
    "After the war, a soldier returns home to find his family's farm in ruins.",
    "The crew of a starship discovers an ancient signal from a dying planet.",
    "A comedy about three friends who open a restaurant in Paris; nothing goes to plan!",
    "Café owner Zoë meets an old rival at the Crème Brûlée festival in Montréal.",
    "In 1999, 42 hackers broke into the bank's servers (allegedly).",
    "She's the one who'll decide what we'd do, they've said, and I'm sure you're right.",
] * 20
TEXTS = [
    "A detective hunts a killer in Los Angeles.",
    "  Extra   white\tspace\n\nand   CAPITALS EVERYWHERE  ",
    "Punctuation!!! Does it... split? (yes); 'quoted' -- dashes & ampersands.",
    "Accents: café, Zoë, crème brûlée, Montréal, naïve façade.",
    "Numbers 1999 and 42, contractions: she's, they've, I'm, you're, we'd, it'll.",
    "",
    "Unseen glyphs: 東京 ß Ω ☃ and an emoji 🎬.",
    " ".join(["The crew of a starship discovers an ancient signal from a dying planet."] * 8),
    "word " * 200,
]


def train() -> tuple[dict[str, int], list[str]]:
    tok = Tokenizer(models.BPE(unk_token=END, end_of_word_suffix="</w>",
                               continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"""
                                   r"""|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[START, END],
                                  end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    return state["vocab"], merges


def main() -> None:
    from transformers import CLIPTokenizer

    vocab, merges = train()
    reference = CLIPTokenizer(vocab=vocab, merges=merges)
    os.makedirs(HERE, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        with open(os.path.join(tmp, "tokenizer.json"), encoding="utf-8") as f:
            tokenizer_json = json.load(f)
    with open(os.path.join(HERE, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json, f, ensure_ascii=False)
    enc = reference(TEXTS, padding="max_length", max_length=77, truncation=True)
    with open(os.path.join(HERE, "reference.json"), "w", encoding="utf-8") as f:
        json.dump({"texts": TEXTS, "ids": enc["input_ids"],
                   "lengths": [sum(m) for m in enc["attention_mask"]]}, f, ensure_ascii=False)
    print(f"wrote {HERE}/tokenizer.json ({len(vocab)} tokens) and reference.json")


if __name__ == "__main__":
    main()
