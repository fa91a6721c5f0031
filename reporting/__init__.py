"""Reports of runs: console and log.txt logging, Weights & Biases, training curves, retrieval and t-SNE pictures,
and result tables over seeds."""
