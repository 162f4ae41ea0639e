"""Measurement tools: the demo, the throughput bench, the init study and the GPU overhead
script (runnable where only torch is installed)."""
