"""The MiniLM family: a pretrained sentence encoder (all-MiniLM-L6-v2, a 6-layer BERT) as
theta_0 and one expert per text task, fine-tuned by the zoo on first use.

``config`` (schemas: zoo and fine-tuning recipe), ``encoder`` (loading, tokenising,
length-sorted batches, mean pooling), ``evaluator`` (accuracy of ``theta_0 + alpha * tau``
through frozen per-task heads), ``task_data`` (examples for data-based merge methods),
``zoo`` (heads and experts trained and cached). The benchmark it scores is
``evaluation.real`` (``text_real8``).
"""
