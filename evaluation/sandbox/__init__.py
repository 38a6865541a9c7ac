"""The embedded sandbox: procedurally generated image tasks (``tasks``, drawn with ``draw``),
their cached splits (``data``) and a small CLIP zoo built on them (``zoo``); no downloads."""
