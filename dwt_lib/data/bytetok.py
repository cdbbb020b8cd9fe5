"""The byte-level tokenizer (``data.tokenizer: bytes``): every UTF-8 byte is a token, nothing to train.

Ids 0-4 are the specials, in the order a trained WordPiece numbers them (``[PAD] [UNK] [CLS] [SEP] [MASK]``), ids
5-260 the 256 bytes (byte ``b`` is id ``b + 5``): 261 tokens. It is a ``tokenizers`` BPE with no merges over
GPT-2's ByteLevel alphabet (each byte shown as one printable character), no normaliser (case and accents kept),
the ByteLevel pre-tokenizer without a prefix space or regex split (the text is one run of bytes) and a
``[CLS] a [SEP] b [SEP]`` template, wrapped in a ``PreTrainedTokenizerFast``: ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` round-trip, and packing, masking and GLUE run on it as on any other tokenizer.
Lengths (``data.max_seq_length``, ``finetune.max_seq_length``) then count bytes, specials included; a truncated
pair may end inside a multi-byte character (decoded as U+FFFD).
"""
from __future__ import annotations

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BYTE_OFFSET = len(SPECIALS)              # id of byte 0
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256      # 261


def byte_tokenizer(model_max_length: int = 512):
    """A fresh byte-level ``PreTrainedTokenizerFast`` (see the module docstring); the same on every call."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast
    alphabet = ByteLevel.alphabet()                  # 256 printable stand-ins, one per byte
    byte_char = _bytes_to_unicode()
    assert sorted(alphabet) == sorted(byte_char.values())
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({byte_char[b]: BYTE_OFFSET + b for b in range(256)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.add_special_tokens(SPECIALS)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length)


#: How a byte that is not a visible ASCII character is shown in a figure or table.
_SHOWN = {0x20: "␣", 0x0A: "↵", 0x09: "⇥"}


def readable(token: str) -> str:
    """A byte token as a reader recognises it: the byte's character for visible ASCII, ``␣`` for a space,
    ``↵`` for a newline, ``\\xNN`` for any other byte (a part of a multi-byte UTF-8 character); a token that is
    not one of the byte alphabet's characters (a special) is returned unchanged. For byte tokenizers only: a word
    piece such as ``é`` would be shown as its Latin-1 byte."""
    b = _CHAR_BYTE.get(token)
    if b is None:
        return token
    if b in _SHOWN:
        return _SHOWN[b]
    return chr(b) if 0x21 <= b <= 0x7E else f"\\x{b:02x}"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's): printable Latin-1 bytes map
    to themselves, the others to U+0100 upwards, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


_CHAR_BYTE = {c: b for b, c in _bytes_to_unicode().items()}
