"""Shared layer: the one LLM client (``client``: retries, cache, usage, endpoint choice) and model serving
(``serve``: vLLM, llama.cpp, transformers, or any command, for the duration of one job)."""
