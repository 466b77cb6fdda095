"""The definitions AWS rejected at CreateStateMachine are rejected here too."""

from __future__ import annotations

import pytest

from fnplane.workflows import DefinitionError, parse_definition

from .corpus import CORPUS, case_names, load


@pytest.mark.parametrize("name", case_names("invalid_definitions"))
def test_rejected_definition(name: str) -> None:
    """Validation refuses the definition, as AWS did."""
    case = CORPUS / "invalid_definitions" / name
    machine_type = "EXPRESS" if "express" in name else "STANDARD"

    with pytest.raises(DefinitionError) as rejected:
        parse_definition(load(case, "definition.json"), machine_type=machine_type)

    assert rejected.value.reason
