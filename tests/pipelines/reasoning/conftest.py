"""Tiny random models the reasoning tests build themselves (no hub, no real weights): a 2-layer Llama causal LM and
token classifier with a byte-level BPE tokenizer and a ChatML template, and a 1-layer BERT sentence encoder."""

from pathlib import Path

import pytest

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["Step 0: Let's break down this problem step by step.", "Step 1: Scurvy is caused by a lack of vitamin C.",
          "The answer is B.", "Which vitamin deficiency causes scurvy? A. Vitamin A B. Vitamin C C. Vitamin D",
          "You are a helpful medical assistant. Answer the medical question below. Think step by step."]


def _tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 5, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token="<|im_start|>", chat_template=CHATML)


def _llama_config(vocab: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024)


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """A random tiny Llama causal-LM directory with a ChatML tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny_lm")
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = _llama_config(len(tok))
    cfg.eos_token_id, cfg.pad_token_id = tok.eos_token_id, tok.pad_token_id
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_token_prm(tmp_path_factory) -> Path:
    """A random tiny Llama token classifier with 2 labels (the reference PRM's class)."""
    import torch
    from transformers import LlamaForTokenClassification

    d = tmp_path_factory.mktemp("tiny_prm")
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = _llama_config(len(tok))
    cfg.num_labels, cfg.pad_token_id = 2, tok.pad_token_id
    LlamaForTokenClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A random 1-layer BERT (hidden 16) with a word-piece vocabulary: a stand-in for MiniLM."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny_encoder")
    words = sorted({w.strip(".?:,").lower() for line in CORPUS for w in line.split()} | set("abcdefghijklmnopqrstuvwxyz0123456789.,:?"))
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=512)).save_pretrained(d)
    tok.save_pretrained(d)
    return d
