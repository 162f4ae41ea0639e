"""Running SGLang with ESamp: the CPU bootstrap, the embedded model's cache, the plugin entry
point, a server child process and the in-process engine."""
