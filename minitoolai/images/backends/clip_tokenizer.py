"""CLIP's tokenizer files (vocab.json, merges.txt) derived from the BPE table that ships in
this package (configs/clip_bpe_simple_vocab_16e6.txt.gz: OpenAI CLIP's, MIT licence, as
distributed in the open_clip_torch wheel), so no tokenizer is ever fetched from a hub.

The derivation is CLIP's own (clip/simple_tokenizer.py): 256 byte symbols, the same with
"</w>", then one token per merge (the first 48,894 lines), then the two special tokens:
49,408 ids, the same as the tokenizer every SD1.5/SDXL checkpoint was trained with.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

BPE_PATH = Path(__file__).resolve().parent.parent / "configs" / "clip_bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map of bytes to printable unicode characters."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    with gzip.open(BPE_PATH) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [START, END]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_clip_tokenizer(directory: Path, *, pad_token: str = END) -> Path:
    """Write a CLIPTokenizer folder (SD1.5 and SDXL's first tokenizer pad with the end
    token; SDXL's second pads with "!")."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": pad_token}
    (directory / "special_tokens_map.json").write_text(json.dumps(special))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        **special, "model_max_length": 77, "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer", "clean_up_tokenization_spaces": True}))
    return directory
