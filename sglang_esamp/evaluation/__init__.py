"""Evaluation pieces shared by ``programs/``, ``sglang-esamp demo`` and ``sglang-esamp eval``:
tasks from the installed data packages, answer checking, a code sandbox, metrics and
semantic diversity."""
