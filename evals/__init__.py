"""Evaluations of a run's checkpoints, one suite per module: per-byte perplexity on held-out corpora
(``perplexity``), OLLM and the paper's ablation benchmarks through lm-evaluation-harness (``lm_eval_model``,
``lm_eval_suites``, offline copies in ``benchmark_data``), IMDB-format in-context learning (``icl``),
induction and associative-recall probes (``probes``) and attention-head scores (``attention``).
``suites.run_suite`` runs one by name and writes ``<run_dir>/evals/<suite>.json``, the only thing the
analysis layer reads."""
