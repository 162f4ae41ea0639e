"""Test-only probe: records every model that transformers loads in a process.

Every Python process whose ``PYTHONPATH`` starts with this folder imports it at start (the
``sitecustomize`` mechanism); with ``ESAMP_LOAD_PROBE`` naming a file, it wraps
``PreTrainedModel.from_pretrained`` (which every ``AutoModel*.from_pretrained`` ends in)
so that each call appends the process id and the model's path to the file.
"""

import os

PROBE = os.environ.get("ESAMP_LOAD_PROBE")

if PROBE:
    from transformers import modeling_utils

    _original = modeling_utils.PreTrainedModel.from_pretrained.__func__

    def _recorded(cls, path, *args, **kwargs):
        with open(PROBE, "a") as f:
            f.write(f"{os.getpid()}\t{cls.__name__}\t{path}\n")
        return _original(cls, path, *args, **kwargs)

    modeling_utils.PreTrainedModel.from_pretrained = classmethod(_recorded)
