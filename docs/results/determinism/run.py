"""Temperature 0 through the chat route: how many distinct texts one request gives, sent 12
times in turn (radix-cache hits after the first), 16 at once, and 12 times batched with
sampled requests (n = 4; with explore 0.5 on the ESamp server), on a plain server and on an
ESamp server (the request itself without explore).

    python docs/results/determinism/run.py docs/results/determinism/result.json
"""

import collections
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import requests

from sglang_esamp.launch.server import ServerProcess

GREEDY = {"messages": [{"role": "user", "content": "Name three uses of a paperclip."}], "max_tokens": 64, "temperature": 0}


def greedy(url: str) -> str:
    r = requests.post(url + "/v1/chat/completions", json=GREEDY, timeout=600)
    return r.json()["choices"][0]["message"]["content"]


def sampled(url: str, i: int, explore: dict) -> None:
    body = {"messages": [{"role": "user", "content": f"Write a short poem about the number {i}."}], "max_tokens": 64,
            "temperature": 1.0, "n": 4, **explore}
    requests.post(url + "/v1/chat/completions", json=body, timeout=600).raise_for_status()


def measure(url: str, explore: dict) -> dict:
    in_turn = [greedy(url) for _ in range(12)]
    with ThreadPoolExecutor(8) as pool:
        at_once = list(pool.map(lambda _: greedy(url), range(16)))
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(greedy, url) if i % 2 == 0 else pool.submit(sampled, url, i, explore) for i in range(24)]
        mixed = [f.result() for i, f in enumerate(futures) if i % 2 == 0]
    texts = in_turn + at_once + mixed
    return {"sequential_distinct": len(set(in_turn)), "concurrent_distinct": len(set(at_once)),
            "mixed_distinct": len(set(mixed)), "all_distinct": len(set(texts)),
            "counts": collections.Counter(texts).most_common()}


def main(out: str) -> None:
    result = {}
    for name, args, explore in (("plain", [], {}), ("esamp", ["--enable-esamp"], {"explore": 0.5})):
        with ServerProcess(args) as srv:
            result[name] = measure(srv.url, explore)
        print(name, {k: v for k, v in result[name].items() if k != "counts"}, flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
