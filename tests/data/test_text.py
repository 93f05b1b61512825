"""Caption batching and relation-swapped hard negatives."""

from __future__ import annotations

import pytest

from t2i.data.shapes import make_sample
from t2i.data.text import CaptionCollator, get_tokenizer, swap_relation


@pytest.mark.parametrize(
    ("caption", "swapped"),
    [
        ("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
        ("a red circle to the right of a blue square", "a red circle to the left of a blue square"),
        ("a cat above a dog", "a cat below a dog"),
        ("a cat below a dog above a bird", "a cat above a dog above a bird"),  # the first only
        ("A mug Left of a cup", "A mug right of a cup"),
        ("a box in front of a lamp", "a box behind a lamp"),
    ],
)
def test_the_first_relation_becomes_its_opposite(caption, swapped):
    assert swap_relation(caption) == swapped
    assert swap_relation(swapped).lower() == caption.lower()


@pytest.mark.parametrize(
    "caption", ["a red circle in the top left", "a large blue square", "a glovebox overhead"]
)
def test_captions_stating_no_relation_have_no_negative(caption):
    assert swap_relation(caption) is None


def test_every_two_object_shapes_caption_has_a_negative_that_names_the_same_objects():
    for i in range(40):
        caption = make_sample(i, seed=3, size=32, num_objects=2)["caption"]
        swapped = swap_relation(caption)
        assert swapped is not None and swapped != caption
        assert sorted(swapped.replace("left", "right").replace("below", "above").split()) == sorted(
            caption.replace("left", "right").replace("below", "above").split()
        )


def test_the_collator_tokenises_each_negative_beside_its_caption():
    captions = ["a cat above a dog", "a large red circle", "a dog to the left of a cat"]
    samples = [{"caption": c} for c in captions]
    batch = CaptionCollator(16, hard_negatives="relations")(samples)
    tokenizer = get_tokenizer(16)
    assert batch["negative_mask"].tolist() == [True, False, True]
    expected = ["a cat below a dog", captions[1], "a dog to the right of a cat"]
    assert batch["negative_input_ids"].equal(tokenizer(expected))
    assert "negative_input_ids" not in CaptionCollator(16)(samples)


def test_an_unknown_kind_of_hard_negative_is_named():
    with pytest.raises(ValueError, match="hard_negatives='colours'"):
        CaptionCollator(16, hard_negatives="colours")
