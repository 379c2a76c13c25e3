"""tests/reference/byte_tokenizer.py: writes a byte-level BPE tokenizer
(tokenizer.json + tokenizer_config.json in Hugging Face's format) into a model
directory: token id b is the byte b, spelled with GPT-2's byte-to-unicode map,
optional merges on top, so a tiny model can carry a real tokenizer into GGUF.

usage: byte_tokenizer.py MODEL_DIR [N_MERGES]"""
import json
import os
import sys


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def write(model_dir, merges=()):
    byte_map = bytes_to_unicode()
    vocab = {byte_map[b]: b for b in range(256)}
    merge_list = []
    for left, right in merges:
        vocab[left + right] = len(vocab)
        merge_list.append(f"{left} {right}")
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                             "use_regex": False},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                     "merges": merge_list}}
    with open(os.path.join(model_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False,
                   "eos_token": byte_map[10], "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}, f,
                  ensure_ascii=False)
    return len(vocab)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    write(sys.argv[1])
