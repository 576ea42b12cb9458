"""Model engines of the local tier: one file per backend. `vllm` is imported only on the GPU path."""
