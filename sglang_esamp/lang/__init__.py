"""ESamp in SGLang's frontend language (``frontend.py``: ``sgl.gen(..., explore=beta)``), the
programs' frontend functions (``recipes.py``) and their backend (``backend.py``)."""
