"""The vLLM out-of-tree plugin (registered through the ``vllm.general_plugins`` entry point)."""
