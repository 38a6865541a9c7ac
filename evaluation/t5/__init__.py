"""The T5 family: transformers T5 / Flan-T5 zoos and prompted NLP benchmarks.

``config`` (schemas), ``zoo`` (pretrained model and experts, full or LoRA), ``checkpoints``
(tied weights, LoRA made dense), ``tasks`` / ``prompts`` / ``data`` (task specs, prompt
templates, splits and the token cache), ``benchmark`` (nlp7, qa8, nlp11, glue8),
``evaluator`` and ``metrics`` (rank classification, greedy generation).
"""
