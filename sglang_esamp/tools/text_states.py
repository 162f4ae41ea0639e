"""The model's own text and the hidden-state pairs the server captures on it, via transformers.

Used offline, where no server runs, by the init study (``init_study.py``); a server never
loads a model outside SGLang. ``sample`` lets the model write continuations of prompts;
``states`` runs each whole text once and returns, per position, the shallow state (the
output of decoder layer ``source_layer``) and the deep state (the final norm's output, the
LM head's input): the pair a decode row gives the server.

Usage::

    model, tokenizer = load(model_path)
    texts = sample(model, tokenizer, [prompt_ids], n=8, max_new_tokens=96, min_p=0.1)
    pairs = states(model, texts, source_layer=0)      # [(h1, hL)], each (T, D)
"""

from __future__ import annotations

import torch


def load(model_path: str):
    """(model, tokenizer) in float32 on the CPU, whatever the server uses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    return model, tokenizer


def stop_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def until_stop(row: list[int], stops: set[int]) -> list[int]:
    """The continuation up to and excluding its first stop token (no row is decoded after it)."""
    for j, t in enumerate(row):
        if t in stops:
            return row[:j]
    return row


@torch.no_grad()
def sample(model, tokenizer, prompts: list[list[int]], n: int, max_new_tokens: int, min_p: float = 0.0) -> list[list[int]]:
    """n continuations at temperature 1 of each prompt (one batch, left-padded), each as
    prompt + continuation token ids, cut before its first stop token; prompt-major order."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # (b, width)
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts]).unsqueeze(1)).long()
    seqs = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, min_p=min_p or None,
        max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=pad,
    )
    stops = stop_ids(model)
    return [prompts[i // n] + until_stop(row, stops) for i, row in enumerate(seqs[:, width:].tolist())]


def check_source_layer(model, source_layer: int) -> None:
    if source_layer >= model.config.num_hidden_layers - 1:
        raise ValueError(f"--esamp-source-layer must be below {model.config.num_hidden_layers - 1}; got {source_layer}")


@torch.no_grad()
def states(model, texts: list[list[int]], source_layer: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per text, (h1, hL): (T, D) each, every position."""
    check_source_layer(model, source_layer)
    out = []
    for text in texts:
        o = model.model(input_ids=torch.tensor([text]), output_hidden_states=True)
        out.append((o.hidden_states[source_layer + 1][0], o.last_hidden_state[0]))
    return out
