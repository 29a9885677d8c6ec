"""Evaluations of a run's checkpoints: per-byte perplexity on held-out corpora, OLLM benchmarks through
lm-evaluation-harness, IMDB-format in-context learning, induction and associative-recall probes, and
attention-head captures. Each writes ``<run_dir>/evals/<suite>.json``; the analysis layer reads only those.
(The suites arrive with the evaluation milestone; the model already exposes what they need: cached
generation and per-head attention probabilities.)"""
