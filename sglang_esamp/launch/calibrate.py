"""Warm a server's base distiller before traffic arrives (``sglang-esamp calibrate``).

The server trains the base that ``--esamp-init calibrated`` groups start from on its own
decode rows (``core/warm_base.py``). This sends it the shipped calibration prompts
(``data/calibration_prompts.txt``: chat instructions through the chat route, plain-text
openings through /generate; a model without a chat template gets every prompt through
/generate) with ``explore = 0``, all at once, round after round until the
base has the rows it needs (the requests still running then are aborted), then waits while
the server fits the base in its idle time and saves it. A server whose base is already
fitted (loaded from its file) is warm: nothing is sent. With --dp-size every rank trains
its own base from the rows routed to it, and calibrate waits for all of them.
Every later start on the same model loads the saved base. A server that the project's
commands start themselves (``server_url``, the programs' backend) is warmed this way when
its base is not fitted yet.

Usage::

    report = warm(url)          # {"steps": 600, "rows": 2110, "rounds": 1, "path": ...}; rounds 0: it was warm
    ensure_warm(url)            # warm only if the server trains a base that is not fitted
    warn_if_cold(url)           # a server given by URL: only say so
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import requests
from tqdm import tqdm

from ..core.warm_base import MIN_ROWS
from .server import esamp_states

logger = logging.getLogger(__name__)


PROMPTS = Path(__file__).resolve().parent.parent / "data" / "calibration_prompts.txt"
NEW_TOKENS = 128
POLL = 0.5  # seconds between two looks at the base's progress


def _base(url: str) -> dict:
    """The base's counters; with --dp-size, every rank's (each trains its own base), merged.
    Exits with the reason when the server trains none."""
    base = _trained_base(url)
    if base is None:
        state = esamp_states(url)[0]
        if state is None:
            raise SystemExit(f"the server at {url} does not run ESamp; start it with --enable-esamp")
        raise SystemExit(f"the server at {url} trains no base distiller: its --esamp-init is {state['config']['init']!r}, "
                         "not 'calibrated' or 'calibrated+prompt'")
    return base


def _trained_base(url: str) -> dict | None:
    """The base's counters, merged over the DP ranks; None when the server trains no base
    (ESamp off, or a random init)."""
    states = esamp_states(url)
    if states[0] is None or states[0].get("base") is None:
        return None
    return merged([state["base"] for state in states])


def merged(bases: list[dict]) -> dict:
    """One view of the DP ranks' bases: fitted when every rank is; owing a fit (the steps all
    ranks still owe) once every rank is fitted or owes one; the fewest rows of any rank; the
    steps and the saved steps summed. One rank's counters are themselves."""
    if len(bases) == 1:
        return bases[0]
    ready = all(b["fitted"] or b["owed"] for b in bases)
    return bases[0] | {"fitted": all(b["fitted"] for b in bases), "owed": sum(b["owed"] for b in bases) if ready else 0,
                       "rows": min(b["rows"] for b in bases), "steps": sum(b["steps"] for b in bases),
                       "saved_steps": sum(_saved(b) for b in bases), "ranks": len(bases)}


def _saved(base: dict) -> int:
    """The steps of one rank's base that are saved; a base loaded from its file (fitted, never
    saved by this server) has nothing to save."""
    if base["saved_steps"] is None:
        return base["steps"] if base["fitted"] and not base["owed"] else 0
    return base["saved_steps"]


def _chat_works(url: str) -> bool:
    """Whether the chat route serves this model: one without a chat template answers 400."""
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "explore": 0}
    return requests.post(url + "/v1/chat/completions", json=body, timeout=600).status_code != 400


def _prompts(url: str) -> list[tuple[str, str]]:
    """The calibration prompts as (kind, text); the chat ones as plain text when the model has
    no chat template."""
    prompts = [tuple(line.split("\t", 1)) for line in PROMPTS.read_text().splitlines()]
    if _chat_works(url):
        return prompts
    logger.info("the model at %s has no chat template: every calibration prompt goes through /generate", url)
    return [("text", text) for _, text in prompts]


def _send(url: str, kind: str, text: str, rid: str) -> None:
    if kind == "chat":
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": NEW_TOKENS, "temperature": 1.0, "explore": 0,
                "rid": rid}
        res = requests.post(url + "/v1/chat/completions", json=body, timeout=3600)
    else:
        body = {"text": text, "sampling_params": {"max_new_tokens": NEW_TOKENS, "temperature": 1.0, "explore": 0}, "rid": rid}
        res = requests.post(url + "/generate", json=body, timeout=3600)
    res.raise_for_status()


def _round(url: str, prompts: list[tuple[str, str]], number: int, progress: bool) -> dict:
    """All prompts at once, each under its own rid; a bar follows the rows the base has
    gathered, and once it owes its fit the requests still running are aborted (their rows
    are no longer needed). Returns the base's counters."""
    rids = [f"esamp-calibrate-{uuid.uuid4().hex}" for _ in prompts]
    base = _base(url)
    with ThreadPoolExecutor(len(prompts)) as pool, tqdm(total=MIN_ROWS, initial=min(base["rows"], MIN_ROWS), unit="row",
                                                         desc=f"calibration rows, round {number}", disable=not progress) as bar:
        sent = [pool.submit(_send, url, kind, text, rid) for (kind, text), rid in zip(prompts, rids)]
        while not (base["fitted"] or base["owed"]) and not all(f.done() for f in sent):
            time.sleep(POLL)
            base = _base(url)
            bar.n = min(base["rows"], MIN_ROWS)
            bar.refresh()
        for rid, f in zip(rids, sent):
            if not f.done():
                requests.post(url + "/abort_request", json={"rid": rid}, timeout=30)
        wait(sent)
    failed = [f.exception() for f in sent if f.exception() is not None]
    base = _base(url)
    if failed and not (base["fitted"] or base["owed"]):
        raise SystemExit(f"{len(failed)} calibration requests failed: {failed[0]}")
    return base


def warm(url: str, max_rounds: int = 8, timeout: float = 1800.0, progress: bool = True) -> dict:
    """Send rounds of the prompts until the base owes its first fit, then wait until it is
    fitted and saved. Returns the base's counters and the rounds sent (0: it was fitted
    already, so nothing was sent and nothing waited for)."""
    url = url.rstrip("/")
    base, rounds = _base(url), 0
    if base["fitted"]:
        return base | {"rounds": 0}
    prompts = _prompts(url)
    deadline = time.monotonic() + timeout
    while not base["fitted"] and not base["owed"] and rounds < max_rounds:
        rounds += 1
        base = _round(url, prompts, rounds, progress)
    if not base["fitted"] and not base["owed"]:
        raise SystemExit(f"after {rounds} rounds the base has {base['rows']} rows and owes no fit; is it failing? {base}")
    start = base["steps"]
    with tqdm(total=max(base["owed"], 1), desc="base distiller fit", unit="step", disable=not progress) as bar:
        while base["owed"] or base["saved_steps"] != base["steps"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"the base did not finish its fit within {timeout:.0f} s: {base}")
            time.sleep(POLL)
            base = _base(url)
            bar.n = min(bar.total, base["steps"] - start)
            bar.refresh()
    return base | {"rounds": rounds}


def ensure_warm(url: str, progress: bool = True) -> None:
    """Warm the server's base if it trains one that is not fitted yet (once per model: later
    starts load the saved base)."""
    base = _trained_base(url)
    if base is None or base["fitted"]:
        return
    print("Warming ESamp's base distiller on this model (once: later starts load it)...", flush=True)
    warm(url, progress=progress)


def warn_if_cold(url: str) -> None:
    """For a server given by URL: say so when its base is not fitted, since its groups then
    start random rather than as ``--esamp-init calibrated`` intends."""
    base = _trained_base(url)
    if base is not None and not base["fitted"]:
        logger.warning("the server at %s has not fitted its base distiller yet (%d of %d rows): its ESamp groups start "
                       "random; run sglang-esamp calibrate --url %s first", url, base["rows"], MIN_ROWS, url)
