"""The CLIP family: open_clip ViT-B/32, B/16, L/14 with OpenAI weights and their fine-tuned
experts (:mod:`.zoo`), and the 8/14/20-task vision benchmark of the TALL masks paper (Wang et
al., ICML 2024; :mod:`.benchmark`): task data (:mod:`.tasks`, class names and templates in
``data/``), dataset loading and caching (:mod:`.datasets`), safe checkpoint reading and key
conversion (:mod:`.checkpoints`), zero-shot heads (:mod:`.heads`), the model a zoo hands to
the pipeline (:mod:`.model`), the image-classification evaluator (:mod:`.evaluator`) and the
config schemas (:mod:`.config`).
"""
