"""Warm a server's base distiller before traffic arrives (``sglang-esamp calibrate``).

The server trains the base that ``--esamp-init calibrated`` groups start from on its own
decode rows (``core/warm_base.py``). This sends it the shipped calibration prompts
(``data/calibration_prompts.txt``: chat instructions through the chat route, plain-text
openings through /generate) with ``explore = 0``, round after round until the base has the
rows it needs, then waits while the server fits the base in its idle time and saves it.
Every later start on the same model loads the saved base. A server that the project's
commands start themselves (``server_url``, the programs' backend) is warmed this way when
its base is not fitted yet.

Usage::

    report = warm(url)          # {"steps": 600, "rows": 5120, "rounds": 1, "path": ...}
    ensure_warm(url)            # warm only if the server trains a base that is not fitted
    warn_if_cold(url)           # a server given by URL: only say so
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from tqdm import tqdm

from ..core.warm_base import MIN_ROWS
from .server import esamp_state

logger = logging.getLogger(__name__)


PROMPTS = Path(__file__).resolve().parent.parent / "data" / "calibration_prompts.txt"
NEW_TOKENS = 128
CONCURRENCY = 16
POLL = 0.5  # seconds between two looks at the base's progress


def _base(url: str) -> dict:
    esamp = esamp_state(url)
    if esamp is None:
        raise SystemExit(f"the server at {url} does not run ESamp; start it with --enable-esamp")
    if esamp.get("base") is None:
        raise SystemExit(f"the server at {url} trains no base distiller: its --esamp-init is {esamp['config']['init']!r}, "
                         "not 'calibrated' or 'calibrated+prompt'")
    return esamp["base"]


def _send(url: str, kind: str, text: str) -> None:
    if kind == "chat":
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": NEW_TOKENS, "temperature": 1.0, "explore": 0}
        res = requests.post(url + "/v1/chat/completions", json=body, timeout=3600)
    else:
        body = {"text": text, "sampling_params": {"max_new_tokens": NEW_TOKENS, "temperature": 1.0, "explore": 0}}
        res = requests.post(url + "/generate", json=body, timeout=3600)
    res.raise_for_status()


def warm(url: str, max_rounds: int = 8, timeout: float = 1800.0, progress: bool = True) -> dict:
    """Send rounds of the prompts until the base owes its first fit, then wait until it is
    fitted and saved. Returns the base's counters."""
    url = url.rstrip("/")
    prompts = [line.split("\t", 1) for line in PROMPTS.read_text().splitlines()]
    base, rounds = _base(url), 0
    deadline = time.monotonic() + timeout
    while not base["fitted"] and not base["owed"] and rounds < max_rounds:
        rounds += 1
        with ThreadPoolExecutor(CONCURRENCY) as pool, tqdm(total=len(prompts), desc=f"calibration prompts, round {rounds}",
                                                           unit="prompt", disable=not progress) as bar:
            for _ in pool.map(lambda p: _send(url, *p), prompts):
                bar.update()
        base = _base(url)
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
    esamp = esamp_state(url)
    base = esamp.get("base") if esamp else None
    if base is None or base["fitted"]:
        return
    print("Warming ESamp's base distiller on this model (once: later starts load it)...", flush=True)
    warm(url, progress=progress)


def warn_if_cold(url: str) -> None:
    """For a server given by URL: say so when its base is not fitted, since its groups then
    start random rather than as ``--esamp-init calibrated`` intends."""
    esamp = esamp_state(url)
    base = esamp.get("base") if esamp else None
    if base is not None and not base["fitted"]:
        logger.warning("the server at %s has not fitted its base distiller yet (%d of %d rows): its ESamp groups start "
                       "random; run sglang-esamp calibrate --url %s first", url, base["rows"], MIN_ROWS, url)
