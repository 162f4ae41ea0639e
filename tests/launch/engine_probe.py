"""Run by test_engine.py in its own process: SGLang's Engine.shutdown() kills every child
process of its caller, which would take the test session's shared servers down with it."""

import json
import math
import sys


def main(model_path: str) -> None:
    from sglang_esamp.launch.engine import make_engine

    engine = make_engine(esamp=True, model_path=model_path)
    out = {}
    try:
        plain = engine.generate("Hello", {"temperature": 0, "max_new_tokens": 5, "ignore_eos": True})
        out["plain"] = plain["meta_info"]
        many = engine.generate("Hello", {"max_new_tokens": 6, "ignore_eos": True, "n": 2, "explore": 0.5, "explore_group": "local"})
        out["explore"] = [o["meta_info"]["esamp"] for o in many]
        out["errors"] = []
        for bad in (math.nan, math.inf, -1.0):
            try:
                engine.generate("Hello", {"max_new_tokens": 2, "explore": bad})
                out["errors"].append(None)
            except ValueError as exc:
                out["errors"].append(str(exc))
        out["after"] = engine.generate("Hello", {"max_new_tokens": 2})["meta_info"]["completion_tokens"]
    finally:
        engine.shutdown()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
