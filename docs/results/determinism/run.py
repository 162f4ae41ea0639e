"""Temperature 0 through the chat route: how many distinct texts does one request give,
sent one at a time (radix-cache hits after the first) and 8 at once, on a plain server and
on an ESamp server (explore absent)?"""
import collections, json, sys
from concurrent.futures import ThreadPoolExecutor
import requests
from sglang_esamp.launch.server import ServerProcess

BODY = {"messages": [{"role": "user", "content": "Name three uses of a paperclip."}], "max_tokens": 64, "temperature": 0}
out = {}
for name, args in (("plain", []), ("esamp", ["--enable-esamp"])):
    with ServerProcess(args) as srv:
        post = lambda _: requests.post(srv.url + "/v1/chat/completions", json=BODY, timeout=600).json()["choices"][0]["message"]["content"]
        seq = [post(i) for i in range(12)]
        with ThreadPoolExecutor(8) as pool:
            par = list(pool.map(post, range(16)))
        other = lambda i: requests.post(srv.url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": f"Write a short poem about the number {i}."}], "max_tokens": 64,
            "temperature": 1.0, "n": 4, **({"explore": 0.5} if name == "esamp" else {})}, timeout=600)
        with ThreadPoolExecutor(12) as pool:
            mixed_f = [pool.submit(post, i) if i % 2 == 0 else pool.submit(other, i) for i in range(24)]
            mixed = [f.result() for i, f in enumerate(mixed_f) if i % 2 == 0]
        out[name] = {"sequential_distinct": len(set(seq)), "concurrent_distinct": len(set(par)), "mixed_distinct": len(set(mixed)),
                     "all_distinct": len(set(seq + par + mixed)), "counts": collections.Counter(seq + par + mixed).most_common()}
        print(name, out[name]["sequential_distinct"], out[name]["concurrent_distinct"], out[name]["mixed_distinct"],
              out[name]["all_distinct"], flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
