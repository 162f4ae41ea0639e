"""The thin integration of the ESamp core into SGLang's runtime, loaded as a plugin."""
