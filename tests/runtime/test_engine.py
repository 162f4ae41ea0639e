"""The in-process engine wrapper on the tiny random model."""

from sglang_esamp.engine import make_engine


def test_engine_generates_with_the_tiny_model(tiny_model):
    engine = make_engine(model_path=str(tiny_model))
    try:
        out = engine.generate("Hello", {"temperature": 0, "max_new_tokens": 5, "ignore_eos": True})
        assert out["meta_info"]["completion_tokens"] == 5 and isinstance(out["text"], str)
    finally:
        engine.shutdown()
