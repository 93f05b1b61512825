"""scripts/record_vocabulary.py: a CLIP trained before t2i recorded its captions' tokens
learns them from its captions, its weights untouched."""

from __future__ import annotations

import shutil

import pytest
from conftest import load_script

from t2i.models import CLIPModel
from t2i.pipelines.common import weights_id


def test_the_record_names_unseen_words_and_leaves_the_weights(saved_pipeline, tmp_path):
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    before = weights_id(pipe / "clip")
    assert CLIPModel.from_pretrained(pipe / "clip").unknown_words("a dog") == []  # no record
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\na blue square above a red circle\n")
    script = load_script("record_vocabulary")
    assert script.main([str(pipe), "--captions", str(captions)]) == 0
    clip = CLIPModel.from_pretrained(pipe / "clip")
    assert clip.unknown_words("a red square") == []
    assert clip.unknown_words("a green dog above a circle") == ["green", "dog"]
    assert weights_id(pipe / "clip") == before
    with pytest.raises(SystemExit) as exit_:
        script.main([str(tmp_path / "none"), "--shapes"])
    assert exit_.value.code == 2
