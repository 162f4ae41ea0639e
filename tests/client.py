"""Small HTTP helpers shared by the runtime tests."""

import collections
import json

import requests


def generate(server, text, timeout=300, **params):
    params.setdefault("max_new_tokens", 8)
    return requests.post(server.url + "/generate", json={"text": text, "sampling_params": params}, timeout=timeout)


def generate_ok(server, text, **params):
    r = generate(server, text, **params)
    assert r.status_code == 200, r.text
    return r.json()


def error_message(r) -> str:
    """The message of an error response: SGLang's /generate field checks answer
    {"error": "..."}, its other errors {"error": {"message": ...}}, the OpenAI routes {"message": ...}."""
    body = r.json()
    err = body.get("error", body.get("message"))
    return err.get("message", "") if isinstance(err, dict) else str(err)


def esamp_stats(server):
    info = requests.get(server.url + "/get_server_info", timeout=30).json()
    return info["internal_states"][0]["esamp"]


def started(server, text, headers=None, rid=None, tokens=1, **params):
    """A streamed /generate request, returned once it has produced ``tokens`` tokens (so it is
    running): an iterator over its remaining chunks. ``finished`` reads it to the end."""
    params.setdefault("max_new_tokens", 8)
    body = {"text": text, "sampling_params": params, "stream": True} | ({"rid": rid} if rid else {})
    r = requests.post(server.url + "/generate", json=body, headers=headers, stream=True, timeout=300)
    assert r.status_code == 200, r.text
    chunks = (json.loads(line[len(b"data: "):]) for line in r.iter_lines() if line.startswith(b"data: {"))
    next(c for c in chunks if c["meta_info"]["completion_tokens"] >= tokens)
    return chunks


def finished(chunks) -> dict:
    """The last chunk of a ``started`` request: its whole text and final meta_info."""
    return collections.deque(chunks, maxlen=1)[0]
