"""Builders of the tiny random models the reasoning tests use (no hub, no real weights): a 2-layer Llama causal LM
and token classifier with a byte-level BPE tokenizer and a ChatML template, a 1-layer BERT sentence encoder, and a
PRM checkpoint (that encoder + a random step-value head). Shared by tests/pipelines/reasoning and tests/app."""

from pathlib import Path

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


def write_tiny_causal_lm(d: Path) -> Path:
    """A random tiny Llama causal-LM directory with a ChatML tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = _llama_config(len(tok))
    cfg.eos_token_id, cfg.pad_token_id = tok.eos_token_id, tok.pad_token_id
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def write_tiny_token_prm(d: Path) -> Path:
    """A random tiny Llama token classifier with 2 labels (the reference PRM's class)."""
    import torch
    from transformers import LlamaForTokenClassification

    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = _llama_config(len(tok))
    cfg.num_labels, cfg.pad_token_id = 2, tok.pad_token_id
    LlamaForTokenClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def write_tiny_encoder(d: Path) -> Path:
    """A random 1-layer BERT (hidden 16) with a word-piece vocabulary: a stand-in for MiniLM."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w.strip(".?:,").lower() for line in CORPUS for w in line.split()} | set("abcdefghijklmnopqrstuvwxyz0123456789.,:?"))
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=512)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def write_tiny_prm(d: Path, encoder_dir: Path) -> Path:
    """A `prm` checkpoint: a random StepValueHead sized for the tiny encoder, pointing at ``encoder_dir``."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.prm import StepValueHead
    from pipelines.reasoning.prm import PRM_KIND, STEP_FEATURES

    torch.manual_seed(0)
    cfg = dict(embed_dim=16, n_features=len(STEP_FEATURES), width=16, layers=1, heads=2, max_steps=24)
    save_checkpoint(d, StepValueHead(**cfg), kind=PRM_KIND, config=cfg, extra={"encoder_dir": str(encoder_dir)})
    return d


GOOD = (" Scurvy is caused by a lack of ascorbic acid in the diet.\n\nStep 2: Ascorbic acid is vitamin C, needed "
        "to build collagen in gums and skin.\n\nStep 3: The answer is B.")
BARE = " The answer is C."


def start_fake_openai(texts: list[str], delay_s: float = 0.0):
    """A local OpenAI-protocol chat server on 127.0.0.1 answering every request with ``texts`` (cycled to n).

    Returns ``(base_url, server)``; call ``server.shutdown()`` when done.
    """
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(delay_s)
            n = body.get("n", 1)
            reply = {"choices": [{"index": i, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": texts[i % len(texts)]}}
                                 for i in range(n)]}
            data = json.dumps(reply).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1", server
