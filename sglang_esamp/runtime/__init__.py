"""ESamp inside SGLang's runtime: the hooks (``hooks.py``, the one table of them) and the
scheduler-side pieces they call (``runtime.py`` and the modules it composes).

Loaded in SGLang's processes by the plugin entry point (``launch/plugin.py``)."""
