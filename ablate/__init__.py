"""The ``ablate`` command: the top floor of the house. It only gathers the commands that each area below
registers for itself (:mod:`ablate.cli`); nothing below imports it."""
