"""The shared vocabulary (ingestapp/vocabulary.py) matches the code and reaches the scripts."""

from __future__ import annotations

import json
import re
from dataclasses import fields

from ingestapp import stages
from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import LABELS, OPTION_FLAGS, STAGE_NAMES, STATUSES, for_scripts


def test_the_vocabulary_names_what_the_code_has() -> None:
    assert STAGE_NAMES[1:] == tuple(stage.name for stage in stages.STAGES)
    assert set(OPTION_FLAGS) == {f.name for f in fields(IngestParameters) if f.type in ("bool", bool)}
    assert set(LABELS["status"]) == set(STATUSES)
    assert set(LABELS["stage"]) == set(STAGE_NAMES)


def test_every_page_hands_the_vocabulary_to_its_scripts(client) -> None:
    html = client.get("/").get_data(as_text=True)
    found = re.search(r'<script type="application/json" id="vocabulary">(.*?)</script>', html, re.S)
    assert found is not None
    assert json.loads(found.group(1)) == json.loads(json.dumps(for_scripts()))
