"""Speed benchmarks that time alternatives side by side in one run (``ablate bench ...``)."""
