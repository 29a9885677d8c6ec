"""The analysis layer: reads run directories only (config.yaml, metrics.jsonl, events.jsonl, evals/*.json)
and regenerates the paper's tables (1, 4-8), loss curves and induction-head plots with the paper's numbers
beside the measured ones. (It arrives with the analysis milestone; Table 1 is already recomputed by
``ablate plan --table1``.)"""
