"""Token engines: a local model as token ids in, token ids out (`Engine`, base.py).

transformers.py (an HF directory or GGUF, any device) and llamacpp.py (optional) are
the engines; fast_llama.py, packed.py, decoding.py, prompt_cache.py and sampling.py
are the CPU fast path they share; quality.py holds the fast paths to the reference.
`LocalClient` (glm_client/client.py) joins an engine with a dialect.
"""
