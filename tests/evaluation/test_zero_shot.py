"""Zero-shot accuracy and retrieval recall, against an oracle whose answers are known."""

from __future__ import annotations

import pytest
import torch

from t2i.evaluation.zero_shot import (
    PROMPTS,
    relation_accuracy,
    retrieval_recall,
    zero_shot_accuracy,
)


class Oracle:
    """Embeds a prompt as the one-hot of its (attribute, value) and an image as the sum of its
    attributes' one-hots; an image tensor carries its attribute value indices in pixel row 0."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.slots = [(a, v) for a, (values, _) in PROMPTS.items() for v in values]
        self.by_prompt = {PROMPTS[a][1](v): i for i, (a, v) in enumerate(self.slots)}

    def tokenize(self, texts: list[str], warn: bool = True) -> torch.Tensor:
        return torch.tensor([self.by_prompt[t] for t in texts])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(ids, len(self.slots)).float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(images), len(self.slots))
        for n, row in enumerate(images[:, 0, 0, :4].long()):
            for (attr, (values, _)), index in zip(PROMPTS.items(), row.tolist(), strict=True):
                out[n, self.slots.index((attr, values[index]))] = 1.0
        return out


def labelled(attributes: list[dict]) -> torch.Tensor:
    images = torch.zeros(len(attributes), 3, 4, 4)
    for n, attrs in enumerate(attributes):
        for k, (attr, (values, _)) in enumerate(PROMPTS.items()):
            images[n, 0, 0, k] = list(values).index(attrs[attr])
    return images


def test_zero_shot_accuracy_counts_the_right_values():
    truth = [
        {"color": c, "shape": "circle", "size": "large", "cell": "top"}
        for c in ("red", "green", "blue", "white")
    ]
    seen = [dict(t) for t in truth]
    seen[0]["color"] = "green"  # the model sees the wrong color in one image in four
    result = zero_shot_accuracy(Oracle(), labelled(seen), truth, batch_size=3)
    assert result == {"color": 0.75, "shape": 1.0, "size": 1.0, "cell": 1.0}


class Identity(Oracle):
    """Caption i and image i share the one-hot of i; `shift` moves the captions."""

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift

    def tokenize(self, texts: list[str], warn: bool = True) -> torch.Tensor:
        return torch.tensor([int(t) for t in texts])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot((ids + self.shift) % 10, 10).float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(images[:, 0, 0, 0].long(), 10).float()


def test_retrieval_recall_of_perfect_and_of_shifted_matches():
    images = torch.zeros(10, 3, 1, 1)
    images[:, 0, 0, 0] = torch.arange(10).float()
    captions = [str(i) for i in range(10)]
    assert retrieval_recall(Identity(), images, captions, batch_size=4) == {
        "recall@1": 1.0,
        "recall@5": 1.0,
    }
    shifted = retrieval_recall(Identity(shift=1), images, captions, batch_size=4)
    assert shifted["recall@1"] == 0.0  # each caption now matches another image better


class RelationOracle(Identity):
    """Reads "left" in a caption as +1 and "right" as -1; image i is +1 when i is even."""

    def tokenize(self, texts: list[str], warn: bool = True) -> torch.Tensor:
        return torch.tensor([1 if "left" in t else -1 for t in texts])

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.float()[:, None]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, 0, :1]


def test_relation_accuracy_counts_images_that_prefer_their_own_relation():
    images = torch.zeros(4, 3, 1, 1)
    images[:, 0, 0, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # left, right, left, right
    captions = [f"a cat to the {r} of a dog" for r in ("left", "right", "right", "right")]
    assert relation_accuracy(RelationOracle(), images, captions, batch_size=3) == 0.75
    with pytest.raises(ValueError, match="'a cat' states no spatial relation"):
        relation_accuracy(RelationOracle(), images[:1], ["a cat"])
