"""docs/configuration.md stays true: its YAML blocks load and its error example is verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text, load_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S)
YAML_BLOCKS = [body for lang, body in BLOCKS if lang == "yaml"]


def test_every_top_level_section_is_documented() -> None:
    from portway.config.schema import GatewayConfig

    text = DOC.read_text()
    for section in GatewayConfig.model_fields:
        assert f"\n## {section}\n" in text, section
        assert any(re.search(rf"^{section}:", b, re.M) for b in YAML_BLOCKS), section


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[f"yaml{i}" for i in range(len(YAML_BLOCKS))])
def test_yaml_examples_load(block: str) -> None:
    # certificate paths in the examples name files of the reader's machine
    load_document(block, "docs", env={}, check_files=False)


def test_error_example_output_is_verbatim() -> None:
    texts = [body for lang, body in BLOCKS if lang == "text"]
    listing = next(t for t in texts if t.startswith(" 1  "))
    expected = texts[texts.index(listing) + 1].rstrip("\n")
    source = "".join(line[4:] + "\n" for line in listing.splitlines())
    with pytest.raises(ConfigError) as info:
        load_config_text(source, "portway.yaml", env={})
    assert str(info.value) == expected
