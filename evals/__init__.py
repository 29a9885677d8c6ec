"""Evaluations of a run's checkpoints, one suite per module: per-byte perplexity on held-out corpora
(``perplexity``), OLLM and the paper's ablation benchmarks through lm-evaluation-harness (``lm_eval_model``,
``lm_eval_suites``, offline copies in ``benchmark_data``), IMDB-format in-context learning (``icl``),
induction and associative-recall probes (``probes``) and attention-head scores (``attention``).

``suites`` is the registry (names, typed options from ``options``), ``plan`` the evaluation plan a run
records and whether its results answer it, ``runner`` runs one suite and writes its result
(``<run_dir>/evals/<suite>.json``), the files the analysis layer reads."""
