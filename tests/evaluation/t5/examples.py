"""One example per T5 task, with the fields its hub dataset has (stand-ins for the tests)."""

from __future__ import annotations

import random

WORDS = "the a cat dog sat on mat red blue big small runs fast slow house tree".split()


def sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def example(task: str, rng: random.Random) -> dict:
    """A random example of ``task`` in its hub dataset's layout."""
    s = lambda n=6: sentence(rng, n)  # noqa: E731
    if task == "paws":
        return {
            "id": rng.randrange(10**6),
            "sentence1": s(),
            "sentence2": s(),
            "label": rng.randrange(2),
        }
    if task == "qasc":
        labels = list("ABCDEFGH")
        return {
            "id": str(rng.random()),
            "question": s(5)[:-1] + "?",
            "fact1": s(),
            "fact2": s(),
            "combinedfact": s(),
            "formatted_question": s(),
            "choices": {"text": [s(2)[:-1] for _ in labels], "label": labels},
            "answerKey": rng.choice(labels),
        }
    if task == "quartz":
        return {
            "id": str(rng.random()),
            "question": s(5)[:-1] + " _____ ?",
            "para": s(8),
            "choices": {"text": ["more", "less"], "label": ["A", "B"]},
            "answerKey": rng.choice("AB"),
            "para_id": "p",
            "para_anno": {},
            "question_anno": {},
        }
    if task == "story_cloze":
        return {
            "story_id": str(rng.random()),
            **{f"input_sentence_{i}": s() for i in range(1, 5)},
            "sentence_quiz1": s(),
            "sentence_quiz2": s(),
            "answer_right_ending": rng.choice([1, 2]),
        }
    if task == "wiki_qa":
        return {
            "question_id": "q",
            "question": s(5)[:-1],
            "document_title": "t",
            "answer": s(),
            "label": rng.randrange(2),
        }
    if task == "winogrande":
        return {
            "sentence": s(4) + " _ " + s(3),
            "option1": "cat",
            "option2": "dog",
            "answer": rng.choice(["1", "2"]),
        }
    if task == "wsc":
        return {
            "text": s(8),
            "span1_index": 0,
            "span2_index": 3,
            "span1_text": "the cat",
            "span2_text": "It",
            "idx": 0,
            "label": rng.randrange(2),
        }
    if task == "cosmos_qa":
        return {
            "id": "c",
            "context": s(10),
            "question": s(5)[:-1] + "?",
            **{f"answer{i}": s(3) for i in range(4)},
            "label": rng.randrange(4),
        }
    if task == "social_iqa":
        return {
            "context": s(8),
            "question": s(5)[:-1] + "?",
            "answerA": s(2),
            "answerB": s(2),
            "answerC": s(2),
            "label": str(rng.randrange(1, 4)),
        }
    if task == "quail":
        return {
            "id": "q",
            "context_id": "c",
            "question_id": "q",
            "domain": "news",
            "metadata": {},
            "context": s(12),
            "question": s(5)[:-1] + "?",
            "question_type": "Causality",
            "answers": [s(3) for _ in range(4)],
            "correct_answer_id": rng.randrange(4),
        }
    if task == "ropes":
        return {
            "id": "r",
            "background": s(10),
            "situation": s(8),
            "question": s(5)[:-1] + "?",
            "answers": {"text": [rng.choice(WORDS)]},
        }
    if task in ("cola", "sst2"):
        return {"sentence": s(), "label": rng.randrange(2), "idx": 0}
    if task == "mnli":
        return {"premise": s(), "hypothesis": s(), "label": rng.randrange(3), "idx": 0}
    if task in ("mrpc", "rte"):
        return {"sentence1": s(), "sentence2": s(), "label": rng.randrange(2), "idx": 0}
    if task == "stsb":
        return {"sentence1": s(), "sentence2": s(), "label": round(rng.uniform(0, 5), 2), "idx": 0}
    if task == "qnli":
        return {"question": s(5)[:-1] + "?", "sentence": s(), "label": rng.randrange(2), "idx": 0}
    if task == "qqp":
        return {"question1": s(5), "question2": s(5), "label": rng.randrange(2), "idx": 0}
    raise ValueError(task)
