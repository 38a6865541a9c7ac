"""The CLIP zoo (open_clip ViT-B/32, B/16, L/14 with OpenAI weights and their fine-tuned
experts) and the 8/14/20-task vision benchmark of the TALL masks paper (Wang et al., ICML
2024): task data (:mod:`.tasks`), dataset loading and caching (:mod:`.datasets`), safe
checkpoint reading and key conversion (:mod:`.checkpoints`) and the zoo loader (:mod:`.zoo`).
"""
