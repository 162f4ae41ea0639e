"""Tiny random-weight models of several architectures SGLang serves on the CPU, built from
transformers configs and saved as safetensors with the embedded model's tokenizer.

| kind | architecture | what it covers |
| --- | --- | --- |
| ``llama`` | LlamaForCausalLM, tied, 49,152 tokens | the embedded model's family (the suite's fast server) |
| ``llama_untied`` | LlamaForCausalLM, separate head | a head that is not the embedding |
| ``gemma3`` | Gemma3ForCausalLM, tied, 65,536 tokens, final-logit softcap 10 | a large vocabulary beyond the tokenizer's, softcapping |
| ``qwen3`` | Qwen3ForCausalLM, separate head, q/k norms | a third decoder family |

``init_range`` scales the random weights: at transformers' default (0.02) every logit is
near 0 and any two tilts look alike; the tilt tests use larger weights, so that logits
spread over several units and the softcap bends them. ``eos_gain`` scales the
end-of-sequence row of the head, so that its logit swings widely and the tilt sometimes
tries to raise it (what the stop cap is for).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def config_of(kind: str, init_range: float):
    import transformers as tf

    common = dict(COMMON, initializer_range=init_range)
    if kind == "llama":
        return tf.LlamaConfig(vocab_size=49152, tie_word_embeddings=True, rope_theta=10000.0, **common)
    if kind == "llama_untied":
        return tf.LlamaConfig(vocab_size=49152, tie_word_embeddings=False, rope_theta=10000.0, **common)
    if kind == "gemma3":
        return tf.Gemma3TextConfig(vocab_size=65536, head_dim=16, tie_word_embeddings=True, sliding_window=64,
                                   final_logit_softcapping=10.0, **common)
    if kind == "qwen3":
        return tf.Qwen3Config(vocab_size=49152, head_dim=16, tie_word_embeddings=False, **common)
    raise ValueError(f"unknown tiny model kind {kind!r}")


def build(kind: str, out: Path, tokenizer_dir: Path, init_range: float = 0.02, eos_gain: float = 1.0) -> Path:
    """Write the tiny model ``kind`` to ``out`` (bf16 safetensors) and return ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config_of(kind, init_range))
    with torch.no_grad():
        model.get_output_embeddings().weight[COMMON["eos_token_id"]] *= eos_gain
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    cfg = json.loads((out / "config.json").read_text())
    if "rope_theta" not in cfg and kind.startswith("llama"):  # SGLang's Llama reads it at the top level
        cfg["rope_theta"] = 10000.0
        (out / "config.json").write_text(json.dumps(cfg))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    return out
