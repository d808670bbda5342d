"""Training runs: the loop (`loop.train`), resume and `init_from`, the DPO reference, the JAX
runtime and multi-host agreement, the memory plan behind `--dry-run`, device peaks and
`gptjax bench`. The math they run (model, steps, objectives) is the library one level up."""
