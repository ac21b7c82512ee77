"""The framework-neutral core (torch and numpy only; never transformers or vLLM): the token
selector and its distances, settings and their precedence, the keep-mask contract and the M-RoPE
position rule. The transformers processors and models (``processing``, ``modeling``), the vLLM
plugin (``vllm_model``), the Hub exporter and the CLI all build on it."""
