"""mergelab's Hydra entry points, run logging and reports."""
