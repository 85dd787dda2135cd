"""build + gguf --bench--> tokens/s, draft acceptance and speedup per task category and speculative mode.

``prompts`` loads the suite (package data plus the user's files), ``modes`` turns
``--spec``/``--sweep`` into the servers to start, ``runner`` measures them against a real
llama-server, ``report`` aggregates, picks the best depth and renders, ``chart`` draws.
"""
