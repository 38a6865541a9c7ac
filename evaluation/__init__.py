"""mergelab's evaluation harness: zoos, benchmarks, heads, metrics and result rows."""
