"""The embedded sandbox: procedurally generated image tasks (``tasks``, drawn with ``draw``),
real MNIST / Fashion-MNIST in place of two of them when installed (``real_tasks``), their
cached splits (``data``), the sandbox benchmark (``benchmark``) and a small CLIP zoo built
on them (``zoo``), with their config schemas (``config``); no downloads. The zoo is scored
by the CLIP family's evaluator (:mod:`evaluation.clip.evaluator`)."""
